"""Optimizer and learning-rate schedule: AdamW, linear warm-up, then constant, linear or cosine decay.

The schedules are transformers' own (`transformers.get_scheduler`: `constant_with_warmup`,
`linear`, `cosine`), so they behave as in TRL and the HF Trainer: the LR rises linearly from 0
over `trainer.warmup_steps` (step 0 of a warm-up has LR 0), then stays or decays toward 0 at
`trainer.total_steps`. The schedule advances once per training step (not per optimizer step),
so both settings are in the same unit.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}
"""`trainer.lr_schedule` -> the name `transformers.get_scheduler` knows it by."""


def lr_factor(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the peak LR at training step `step` (0-based), read off the real scheduler."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, warmup=warmup, total=total, schedule=schedule)
    for _ in range(step):
        opt.step()
        sched.step()
    return float(opt.param_groups[0]["lr"])


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


def make_scheduler(opt: torch.optim.Optimizer, *, warmup: int, total: int,
                   schedule: str) -> torch.optim.lr_scheduler.LRScheduler:
    """transformers' schedule for `trainer.lr_schedule` (constant, linear or cosine, each with warm-up)."""
    from transformers import get_scheduler

    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr_schedule {schedule!r}; use constant, linear or cosine")
    return get_scheduler(SCHEDULES[schedule], opt, num_warmup_steps=warmup, num_training_steps=total)
