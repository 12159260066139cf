"""AdamW for the head, with the arithmetic of ``torch.optim.AdamW`` bit for bit.

Why not ``torch.optim.AdamW`` itself: every ``torch.optim`` optimiser imports PyTorch's
compiler package ``torch._dynamo`` when it is made (about 2 s of start-up, sympy and all)
and regroups its tensors on every step (about 1.8 ms a step, 990 steps in a default
training). Retraining with a warm cache is meant to take under 15 s, and that was 4 s of
it. This class does the same ``torch._foreach_*`` operations in the same order as
PyTorch's multi-tensor path for float CPU tensors (no amsgrad, no maximize, no
capturable), so it trains the same bytes (``tests/test_train.py`` holds the two side by
side, and fails if a PyTorch upgrade makes them differ).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class AdamW:
    """Decoupled-weight-decay Adam over a fixed list of parameters (Loshchilov & Hutter)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], *, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("AdamW got no parameters")
        if any(p.is_complex() or p.device.type != "cpu" for p in self.params):
            raise ValueError("this AdamW handles real-valued CPU parameters only")
        self.lr, (self.beta1, self.beta2) = lr, betas
        self.eps, self.weight_decay = eps, weight_decay
        self.steps = 0
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format)
                         for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format)
                            for p in self.params]

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (all of them, in the head)."""
        params, grads = self.params, [p.grad for p in self.params]
        if any(grad is None for grad in grads):
            raise ValueError("AdamW.step: every parameter needs a gradient")
        self.steps += 1
        lr, beta1, beta2, step = self.lr, self.beta1, self.beta2, float(self.steps)
        if self.weight_decay != 0:
            torch._foreach_mul_(params, 1 - lr * self.weight_decay)
        torch._foreach_lerp_(self.exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(self.exp_avg_sqs, beta2)
        torch._foreach_addcmul_(self.exp_avg_sqs, grads, grads, 1 - beta2)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        denominators = torch._foreach_sqrt(self.exp_avg_sqs)
        torch._foreach_div_(denominators, [bias_correction2_sqrt] * len(params))
        torch._foreach_add_(denominators, self.eps)
        torch._foreach_addcdiv_(params, self.exp_avgs, denominators,
                                [(lr / bias_correction1) * -1] * len(params))
