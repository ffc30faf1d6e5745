"""Policy and value losses on loss-masked tokens.

Shapes: `[B, T]` tensors are per response token; `mask[b, t]` is 1 exactly
where token t of sample b was sampled by the policy (tool-result tokens and
padding are 0), so nothing here ever trains on text the model did not write.

Aggregation (`algorithm.loss_agg`):

- `token-mean`: sum of the per-token losses over all masked tokens of the
  mini-batch, divided by the number of those tokens. Long responses weigh
  more.
- `seq-mean`: per-sequence mean over its masked tokens, then the mean over
  sequences. Every sample weighs the same.

With gradient accumulation, a micro-batch passes the *mini-batch's* token or
sequence count as `denominator`, so the accumulated gradient equals the
gradient of the whole mini-batch's loss (a per-micro-batch mean would not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

LossAgg = Literal["token-mean", "seq-mean"]


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return (values * mask).sum() if dim is None else (values * mask).sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is 1 (0 when the mask is empty)."""
    return masked_sum(values, mask, dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Shift and scale to mean 0, std 1 over the masked entries (masked-out entries become 0)."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    n = mask.sum()
    if n > 1:  # unbiased, as torch.std
        var = var * n / (n - 1)
    return (values - mean) * torch.rsqrt(var + eps) * mask


def aggregate(loss: torch.Tensor, mask: torch.Tensor, mode: LossAgg, denominator: float | None = None) -> torch.Tensor:
    """Reduce a `[B, T]` per-token loss to a scalar.

    Args:
        loss: per-token loss.
        mask: 1 on tokens that count.
        mode: "token-mean" or "seq-mean".
        denominator: the count to divide by: tokens (token-mean) or sequences
            with at least one masked token (seq-mean) of the whole mini-batch.
            None uses this tensor's own count.
    """
    mask = mask.to(loss.dtype)
    if mode == "token-mean":
        total = masked_sum(loss, mask)
        count = mask.sum() if denominator is None else torch.tensor(float(denominator))
        return total / count.clamp(min=1)
    if mode == "seq-mean":
        per_seq = masked_sum(loss, mask, dim=-1) / mask.sum(-1).clamp(min=1)
        has_tokens = (mask.sum(-1) > 0).to(loss.dtype)
        count = has_tokens.sum() if denominator is None else torch.tensor(float(denominator))
        return (per_seq * has_tokens).sum() / count.clamp(min=1)
    raise ValueError(f"unknown loss aggregation {mode!r}; use 'token-mean' or 'seq-mean'")


def agg_denominator(mask: torch.Tensor, mode: LossAgg) -> float:
    """What `aggregate` divides by for this (mini-batch) mask."""
    if mode == "token-mean":
        return float(mask.sum())
    return float((mask.sum(-1) > 0).sum())


@dataclass(frozen=True)
class PolicyLossStats:
    """Detached diagnostics of one policy-loss evaluation (means over masked tokens)."""

    clip_frac: float
    approx_kl: float  # k3 estimate of KL(old || new): how far this update moved
    ratio_mean: float
    ratio_max: float


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    agg: LossAgg = "token-mean",
    denominator: float | None = None,
) -> tuple[torch.Tensor, PolicyLossStats]:
    """The PPO clipped surrogate, as a loss to minimise.

    Per token: `max(-A * r, -A * clip(r, 1 - clip_low, 1 + clip_high))` with
    `r = exp(logprobs - old_logprobs)`; then `aggregate` over masked tokens.
    `clip_frac` is the share of masked tokens where the clipped term is the
    larger one (the gradient is cut there).
    """
    clip_high = clip_low if clip_high is None else clip_high
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio.clamp(-20.0, 20.0))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    loss = aggregate(per_token, mask, agg, denominator)
    with torch.no_grad():
        m = mask.to(per_token.dtype)
        stats = PolicyLossStats(
            clip_frac=float(masked_mean((clipped > unclipped).to(per_token.dtype), m)),
            approx_kl=float(masked_mean(torch.exp(-log_ratio) - 1 + log_ratio, m)),
            ratio_mean=float(masked_mean(ratio, m)),
            ratio_max=float((ratio * m).max()) if m.sum() > 0 else 1.0,
        )
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: float | None = 0.2,
    agg: LossAgg = "token-mean",
    denominator: float | None = None,
) -> tuple[torch.Tensor, float]:
    """The clipped value loss `0.5 * max((V - R)^2, (V_clip - R)^2)`.

    `V_clip = old_V + clip(V - old_V, -clip, clip)`; `clip=None` gives the plain
    squared error. Returns the loss and the share of masked tokens where the
    clipped term was used.
    """
    unclipped = (values - returns) ** 2
    if clip is None:
        per_token = 0.5 * unclipped
        frac = 0.0
    else:
        v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
        clipped = (v_clipped - returns) ** 2
        per_token = 0.5 * torch.maximum(unclipped, clipped)
        with torch.no_grad():
            frac = float(masked_mean((clipped > unclipped).to(values.dtype), mask.to(values.dtype)))
    return aggregate(per_token, mask, agg, denominator), frac


def logprobs_from_logits(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """log p(token) under `logits` (`[..., V]`), for `token_ids` (`[...]`)."""
    picked = torch.gather(logits, -1, token_ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position (`[..., V]` -> `[...]`)."""
    log_z = torch.logsumexp(logits, dim=-1)
    probs = torch.softmax(logits, dim=-1)
    return log_z - (probs * logits).sum(-1)
