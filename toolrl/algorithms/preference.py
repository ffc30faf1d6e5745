"""Offline objectives: supervised fine-tuning and direct preference optimisation (DPO, IPO, hinge).

Plain tensor functions, like the rest of `toolrl.algorithms`; the drivers are
`toolrl.trainer.sft` and `toolrl.trainer.dpo`.

SFT: the negative log-likelihood of the assistant tokens (loss mask 1), with
the same aggregation as the RL loss (`token-mean` by default).

DPO (Rafailov et al. 2023). With sequence log-probabilities (sums over the
response's assistant tokens) of the chosen `c` and rejected `r` response under
the policy `π` and the frozen reference `π_ref`:

    h = [log π(c) - log π_ref(c)] - [log π(r) - log π_ref(r)]

    sigmoid (DPO):        -log σ(β h)
    ipo (Azar et al.):    (h - 1 / (2β))²
    hinge (SLiC):         max(0, 1 - β h)

The implicit rewards `β (log π(y) - log π_ref(y))` of chosen and rejected are
logged, with the share of pairs where the chosen one is higher (`dpo/accuracy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from toolrl.algorithms.losses import LossAgg, aggregate, masked_sum

DPOLoss = Literal["sigmoid", "ipo", "hinge"]


def sft_loss(logprobs: torch.Tensor, mask: torch.Tensor, agg: LossAgg = "token-mean",
             denominator: float | None = None, norm_len: int | None = None) -> torch.Tensor:
    """Negative log-likelihood of the masked (assistant) tokens."""
    return aggregate(-logprobs, mask, agg, denominator, norm_len)


def sequence_logprobs(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`[B, T]` per-token logprobs -> `[B]` sums over the masked tokens."""
    return masked_sum(logprobs, mask.to(logprobs.dtype), dim=-1)


@dataclass(frozen=True)
class DPOStats:
    reward_chosen: float
    reward_rejected: float
    accuracy: float
    margin: float


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, *, beta: float = 0.1, kind: DPOLoss = "sigmoid"
             ) -> tuple[torch.Tensor, DPOStats]:
    """Per-pair preference losses `[P]` from `[P]` sequence log-probabilities, and detached statistics."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    chosen = policy_chosen - ref_chosen
    rejected = policy_rejected - ref_rejected
    h = chosen - rejected
    if kind == "sigmoid":
        losses = -F.logsigmoid(beta * h)
    elif kind == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    elif kind == "hinge":
        losses = torch.relu(1.0 - beta * h)
    else:
        raise ValueError(f"unknown DPO loss {kind!r}; use 'sigmoid', 'ipo' or 'hinge'")
    with torch.no_grad():
        rc, rr = beta * chosen.detach(), beta * rejected.detach()
        stats = DPOStats(reward_chosen=float(rc.mean()), reward_rejected=float(rr.mean()),
                         accuracy=float((rc > rr).float().mean()), margin=float((rc - rr).mean()))
    return losses, stats
