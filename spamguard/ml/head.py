"""BERT_Arch: the small trained head on top of the frozen backbone."""

from __future__ import annotations

import torch
from torch import nn


class BertArch(nn.Module):
    """Standardise -> Linear(in, 512) -> ReLU -> Dropout -> Linear(512, 2) -> LogSoftmax.

    The recipe's head, sized from its input rather than a fixed 768. The input mean and
    standard deviation are buffers, so they are saved with the weights and the same
    scaling is applied in training and serving.
    """

    def __init__(self, input_dim: int, hidden: int = 512, dropout: float = 0.1):
        super().__init__()
        self.register_buffer("input_mean", torch.zeros(input_dim))
        self.register_buffer("input_std", torch.ones(input_dim))
        self.fc1 = nn.Linear(input_dim, hidden)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, 2)
        self.softmax = nn.LogSoftmax(dim=1)

    def set_scaling(self, features: torch.Tensor) -> None:
        """Fit the input standardisation to training features."""
        self.input_mean.copy_(features.mean(0))
        self.input_std.copy_(features.std(0).clamp(min=1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.input_mean) / self.input_std
        return self.softmax(self.fc2(self.dropout(self.relu(self.fc1(x)))))
