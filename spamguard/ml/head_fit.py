"""Fit the BERT_Arch head on fixed inputs: class-weighted NLLLoss, AdamW, gradient
clipping, the weights of the best validation epoch kept (the recipe's training loop).

Kept apart from :mod:`spamguard.ml.train`, which prepares the inputs and makes a version
around it, because cross-validation (``bench/crossval.py``) fits heads without versions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.utils.class_weight import compute_class_weight
from tqdm.auto import tqdm

from spamguard.ml.adamw import AdamW
from spamguard.ml.blend import head_logit
from spamguard.ml.embeddings import show_progress
from spamguard.ml.head import BertArch

if TYPE_CHECKING:
    from spamguard.ml.train import TrainConfig

# What picks the epoch whose weights fit_head keeps: the lowest validation loss (the
# recipe), or the highest ROC AUC / average precision of the spam logit on validation.
SELECTIONS = {"loss": None, "auc": roc_auc_score, "ap": average_precision_score}


@dataclass
class HeadFit:
    """A trained head and how training went."""

    head: BertArch
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)


def class_weights(labels: np.ndarray, sample_weight: np.ndarray | None = None) -> torch.Tensor:
    """Balanced class weights, as in the recipe (about [0.58, 3.7] on the SMS data).

    With ``sample_weight``, classes are balanced by their summed weights (sklearn's rule,
    ``total / (2 * class total)``), so weighting some messages up does not tilt the loss
    towards their class as a whole.
    """
    if sample_weight is None:
        weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    else:
        totals = np.array([sample_weight[labels == c].sum() for c in (0, 1)], dtype=np.float64)
        if not np.all(totals > 0):
            raise ValueError("class weights need messages of both classes")
        weights = totals.sum() / (2 * totals)
    return torch.tensor(weights, dtype=torch.float32)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block.

    The head's matrices (32 x 400 by 400 x 512) are far too small to share between
    threads: on 2 cores one thread trained the default head in 1.8 s against 11-19 s with
    two while anything else ran on the machine (2026-12-01), and as fast when it was
    quiet. One thread also makes the trained bytes the same on any number of cores.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_head(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             config: TrainConfig, progress: bool | None = None, *,
             select: str = "loss", sample_weight: np.ndarray | None = None) -> HeadFit:
    """Train BERT_Arch with class-weighted NLLLoss; keep the weights of the best val loss
    (or of the best val ranking, ``select``).

    Runs on one torch thread (:func:`one_thread`).

    Args:
        x_train, y_train: head inputs and 0/1 labels to learn from.
        x_val, y_val: held-out inputs and labels that pick the best epoch.
        config: optimiser and head settings.
        progress: show a bar over epochs (None: only on a terminal).
        select: what picks the kept epoch (:data:`SELECTIONS`): "loss" (the recipe) or the
            highest validation ROC AUC ("auc") or average precision ("ap") of the spam
            logit, recorded in the history as ``val_auc``/``val_ap`` (cross-validation's
            candidates). Patience counts epochs since the best; ties keep the earlier one.
        sample_weight: one weight per training message (None: all 1, the recipe's loss
            exactly). Validation loss is never weighted.

    Returns:
        The best head (in eval mode) with its epoch and loss history (best_val_loss is the
        kept epoch's validation loss).
    """
    if select not in SELECTIONS:
        raise ValueError(f"select must be one of {', '.join(SELECTIONS)}, not {select!r}")
    with one_thread():
        return _fit_head(x_train, y_train, x_val, y_val, config, progress, select,
                         sample_weight)


@dataclass
class _HeadTraining:
    """A fresh head with its data, loss, optimiser and batch-order generator (seeded)."""

    head: BertArch
    xt: torch.Tensor
    yt: torch.Tensor
    loss_fn: torch.nn.NLLLoss
    optimiser: AdamW
    generator: torch.Generator
    sample_weight: torch.Tensor | None = None  # per training message; None: the recipe

    @classmethod
    def start(cls, x_train: np.ndarray, y_train: np.ndarray, config: TrainConfig,
              sample_weight: np.ndarray | None = None) -> _HeadTraining:
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        xt, yt = torch.from_numpy(x_train.astype(np.float32)), torch.from_numpy(y_train)
        head = BertArch(xt.shape[1], hidden=config.hidden, dropout=config.dropout)
        head.set_scaling(xt)
        weights = None
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
            if sample_weight.shape != (len(y_train),) or not np.all(sample_weight > 0):
                raise ValueError("sample_weight needs one positive weight per training message")
            weights = torch.from_numpy(sample_weight.astype(np.float32))
        loss_fn = torch.nn.NLLLoss(weight=class_weights(y_train, sample_weight))
        # torch.optim.AdamW's arithmetic, bit for bit, without its start-up (see adamw.py)
        optimiser = AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        return cls(head, xt, yt, loss_fn, optimiser, generator, weights)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """The class-weighted NLL of a batch; with sample weights, their weighted mean
        (NLLLoss's own mean divides by the batch's summed class weights, and so does this)."""
        log_probs, labels = self.head(self.xt[batch]), self.yt[batch]
        if self.sample_weight is None:
            return self.loss_fn(log_probs, labels)
        per_message = torch.nn.functional.nll_loss(log_probs, labels, reduction="none")
        weights = self.sample_weight[batch] * self.loss_fn.weight[labels]
        return (weights * per_message).sum() / weights.sum()

    def epoch(self, batch_size: int) -> float:
        """One pass over shuffled batches (gradient norm clipped at 1.0); the mean loss."""
        self.head.train()
        order = torch.randperm(len(self.xt), generator=self.generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            self.optimiser.zero_grad()
            loss = self.loss(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.head.parameters(), 1.0)
            self.optimiser.step()
            total += float(loss.detach()) * len(batch)
        self.head.eval()
        return total / len(self.xt)


def _fit_head(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
              config: TrainConfig, progress: bool | None, select: str = "loss",
              sample_weight: np.ndarray | None = None) -> HeadFit:
    run = _HeadTraining.start(x_train, y_train, config, sample_weight)
    head = run.head
    xv, yv = torch.from_numpy(x_val.astype(np.float32)), torch.from_numpy(y_val)
    best = HeadFit(head=head, best_epoch=-1, best_val_loss=float("inf"))
    best_state, best_score = None, float("inf")  # lower is better: loss or -AUC / -AP
    show = show_progress(progress, config.epochs)
    for epoch in tqdm(range(config.epochs), desc="training head", unit="epoch", disable=not show):
        train_loss = run.epoch(config.batch_size)
        with torch.inference_mode():
            log_probs = head(xv)
            val_loss = float(run.loss_fn(log_probs, yv))
        record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss}
        score = val_loss
        if SELECTIONS[select] is not None:
            record[f"val_{select}"] = float(SELECTIONS[select](y_val,
                                                               head_logit(log_probs.numpy())))
            score = -record[f"val_{select}"]
        best.history.append(record)
        if score < best_score:
            best_score, best.best_val_loss, best.best_epoch = score, val_loss, epoch
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        elif epoch - best.best_epoch >= config.patience:
            break  # the selection measure has stopped improving; the best weights are kept
    head.load_state_dict(best_state)
    head.eval()
    return best


def fit_head_epochs(x: np.ndarray, y: np.ndarray, epochs: int, config: TrainConfig) -> BertArch:
    """:func:`fit_head`'s training (same seed, same steps) for exactly ``epochs`` epochs with
    no validation part, keeping the last weights (cross-validation's refit). On fit_head's
    own training data with its best epoch count + 1 it returns the head fit_head kept."""
    with one_thread():
        run = _HeadTraining.start(x, y, config)
        for _ in range(epochs):
            run.epoch(config.batch_size)
    return run.head
