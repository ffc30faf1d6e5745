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
- `token-sum-norm` (Dr. GRPO): per-sequence *sum* over its masked tokens,
  divided by a constant `norm_len` (`algorithm.loss_norm_tokens`, default
  `rollout.max_total_tokens`), then the mean over sequences. Neither a long nor
  a short response gets its per-token gradient scaled by its own length.

DAPO's token-level aggregation is `token-mean`.

With gradient accumulation, a micro-batch passes the *mini-batch's* token or
sequence count as `denominator`, so the accumulated gradient equals the
gradient of the whole mini-batch's loss (a per-micro-batch mean would not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

LossAgg = Literal["token-mean", "seq-mean", "token-sum-norm"]


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return (values * mask).sum() if dim is None else (values * mask).sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is 1 (0 when the mask is empty)."""
    return masked_sum(values, mask, dim) / mask.sum(dim).clamp(min=1)


def _masked_max(values: torch.Tensor, mask: torch.Tensor, empty: float) -> torch.Tensor:
    """0-d: the largest of `values` where `mask` is 1, `empty` when the mask is empty (computed on the device)."""
    if not values.numel():
        return values.new_tensor(empty)
    best = torch.where(mask > 0, values, torch.full_like(values, float("-inf"))).amax()
    return torch.where(mask.any(), best, values.new_tensor(empty))


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Shift and scale to mean 0, std 1 over the masked entries (masked-out entries become 0).

    Masked entries that are all the same give exactly 0: their float mean can be an ulp off, and scaled by
    `1 / sqrt(eps)` that ulp would become a spurious value (about 1e-3 for entries of 1.2).
    """
    picked = values[mask > 0]
    if not picked.numel() or bool(picked.max() == picked.min()):
        return torch.zeros_like(values)
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    n = mask.sum()
    if n > 1:  # unbiased, as torch.std
        var = var * n / (n - 1)
    return (values - mean) * torch.rsqrt(var + eps) * mask


def aggregate(loss: torch.Tensor, mask: torch.Tensor, mode: LossAgg, denominator: float | None = None,
              norm_len: int | None = None) -> torch.Tensor:
    """Reduce a `[B, T]` per-token loss to a scalar.

    Args:
        loss: per-token loss.
        mask: 1 on tokens that count.
        mode: "token-mean", "seq-mean" or "token-sum-norm".
        denominator: the count to divide by: tokens (token-mean), sequences
            with at least one masked token (seq-mean), or those sequences times
            `norm_len` (token-sum-norm) of the whole mini-batch. None uses this
            tensor's own count.
        norm_len: the constant length of token-sum-norm (needed when `denominator` is None).
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
    if mode == "token-sum-norm":
        count = torch.tensor(float(agg_denominator(mask, mode, norm_len) if denominator is None else denominator))
        return masked_sum(loss, mask) / count.clamp(min=1)
    raise ValueError(f"unknown loss aggregation {mode!r}; use 'token-mean', 'seq-mean' or 'token-sum-norm'")


def loss_norm_len(cfg: object) -> int:
    """token-sum-norm's constant length for a run config: `algorithm.loss_norm_tokens`, else `rollout.max_total_tokens`."""
    alg, rollout = getattr(cfg, "algorithm"), getattr(cfg, "rollout")
    return int(getattr(alg, "loss_norm_tokens", None) or rollout.max_total_tokens)


def agg_denominator(mask: torch.Tensor, mode: LossAgg, norm_len: int | None = None) -> float:
    """What `aggregate` divides by for this (mini-batch) mask."""
    if mode == "token-mean":
        return float(mask.sum())
    seqs = float((mask.sum(-1) > 0).sum())
    if mode == "token-sum-norm":
        if not norm_len or norm_len < 1:
            raise ValueError("loss_agg=token-sum-norm needs the constant length norm_len (algorithm.loss_norm_tokens "
                             "or rollout.max_total_tokens)")
        return seqs * float(norm_len)
    return seqs


@dataclass(frozen=True)
class PolicyLossStats:
    """Detached diagnostics of one policy-loss evaluation (means over masked tokens), as 0-d tensors on the loss's
    device: the trainer reads them back once per optimizer step, not between a micro-batch's forward and backward
    (`float(stats.clip_frac)` reads one)."""

    clip_frac: torch.Tensor
    approx_kl: torch.Tensor  # k3 estimate of KL(old || new): how far this update moved
    ratio_mean: torch.Tensor
    ratio_max: torch.Tensor


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
    dual_clip: float | None = None,
    is_weights: torch.Tensor | None = None,
    norm_len: int | None = None,
) -> tuple[torch.Tensor, PolicyLossStats]:
    """The PPO clipped surrogate, as a loss to minimise.

    Per token: `max(-A * r, -A * clip(r, 1 - clip_low, 1 + clip_high))` with
    `r = exp(logprobs - old_logprobs)`; then `aggregate` over masked tokens.
    `clip_frac` is the share of masked tokens where the clipped term is the
    larger one (the gradient is cut there).

    `dual_clip = c > 1` (Ye et al. 2020): where `A < 0` the per-token loss is
    also capped at `-A * c`, so a token whose ratio has grown huge under a
    negative advantage cannot dominate the step. `is_weights` (detached, `[B, T]`)
    multiply each token's loss: the truncated importance weights between the
    rollout engine and the trainer (`truncated_is_weights`).
    """
    log_ratio = logprobs - old_logprobs
    return _clipped_surrogate(log_ratio, log_ratio, advantages, mask, clip_low=clip_low, clip_high=clip_high,
                              agg=agg, denominator=denominator, dual_clip=dual_clip, is_weights=is_weights,
                              norm_len=norm_len)


def _clipped_surrogate(log_ratio: torch.Tensor, token_log_ratio: torch.Tensor, advantages: torch.Tensor,
                       mask: torch.Tensor, *, clip_low: float, clip_high: float | None, agg: LossAgg,
                       denominator: float | None, dual_clip: float | None, is_weights: torch.Tensor | None,
                       norm_len: int | None) -> tuple[torch.Tensor, PolicyLossStats]:
    """The clipped surrogate on `log_ratio` (token or sequence level); `token_log_ratio` feeds the approx_kl stat."""
    clip_high = clip_low if clip_high is None else clip_high
    ratio = torch.exp(log_ratio.clamp(-20.0, 20.0))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        capped = torch.minimum(per_token, -advantages * dual_clip)
        per_token = torch.where(advantages < 0, capped, per_token)
    if is_weights is not None:
        per_token = per_token * is_weights.detach()
    loss = aggregate(per_token, mask, agg, denominator, norm_len)
    log_ratio = token_log_ratio
    with torch.no_grad():
        m = mask.to(per_token.dtype)
        stats = PolicyLossStats(
            clip_frac=masked_mean((clipped > unclipped).to(per_token.dtype), m),
            approx_kl=masked_mean(torch.exp(-log_ratio) - 1 + log_ratio, m),
            ratio_mean=masked_mean(ratio, m),
            ratio_max=_masked_max(ratio, m, empty=1.0),
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
) -> tuple[torch.Tensor, float | torch.Tensor]:
    """The clipped value loss `0.5 * max((V - R)^2, (V_clip - R)^2)`.

    `V_clip = old_V + clip(V - old_V, -clip, clip)`; `clip=None` gives the plain
    squared error. Returns the loss and the share of masked tokens where the
    clipped term was used (a 0-d tensor; 0.0 without clipping).
    """
    unclipped = (values - returns) ** 2
    if clip is None:
        per_token = 0.5 * unclipped
        frac = 0.0
    else:
        v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
        clipped = (v_clipped - returns) ** 2
        per_token = 0.5 * torch.maximum(unclipped, clipped)
        with torch.no_grad():  # a 0-d tensor: read back with the step's other statistics
            frac = masked_mean((clipped > unclipped).to(values.dtype), mask.to(values.dtype))
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


# ----------------------------------------------------------------------------------------------
# GSPO, truncated importance sampling, and the policy-loss plugin interface
# ----------------------------------------------------------------------------------------------


def sequence_log_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO's per-token log-ratio: the sequence's length-normalised log-ratio as value, each token's gradient.

    `log s_i = (1/|y_i|) sum_t (logprob_t - old_t)` over the masked tokens;
    returned as `sg[log s_i] + logprob_t - sg[logprob_t]` on every token, so
    `exp(.)` equals `s_i` and its gradient is `s_i * grad logprob_t` (the paper's GSPO-token form).
    """
    m = mask.to(logprobs.dtype)
    log_s = masked_sum(logprobs - old_logprobs, m, dim=-1) / m.sum(-1).clamp(min=1)
    return log_s.detach().unsqueeze(-1) + logprobs - logprobs.detach()


def gspo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 3e-4,
    clip_high: float | None = 4e-4,
    agg: LossAgg = "seq-mean",
    denominator: float | None = None,
    dual_clip: float | None = None,
    is_weights: torch.Tensor | None = None,
    norm_len: int | None = None,
) -> tuple[torch.Tensor, PolicyLossStats]:
    """GSPO (Zheng et al. 2025): the clipped surrogate on the sequence-level ratio `s_i` (see `sequence_log_ratio`).

    A whole response is clipped or not, so the clip ranges are far smaller than
    PPO's (the paper: 3e-4 / 4e-4). `seq-mean` matches the paper's objective.
    """
    seq = sequence_log_ratio(logprobs, old_logprobs, mask)
    return _clipped_surrogate(seq, logprobs.detach() - old_logprobs, advantages, mask, clip_low=clip_low,
                              clip_high=clip_high, agg=agg, denominator=denominator, dual_clip=dual_clip,
                              is_weights=is_weights, norm_len=norm_len)


def truncated_is_weights(old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, mask: torch.Tensor,
                         cap: float) -> torch.Tensor:
    """Truncated importance weights `min(exp(trainer_old - rollout), cap)` on masked tokens (detached).

    The rollout engine (vLLM, a bfloat16 engine, another kernel) samples from a
    slightly different distribution than the trainer computes; weighting each
    token's policy-gradient term by this ratio, capped at `cap`, corrects the
    mismatch without letting a rare token's weight explode (Yao et al. 2025).
    """
    if cap <= 0:
        raise ValueError(f"the truncated-IS cap must be positive, got {cap}")
    log_w = (old_logprobs - rollout_logprobs).detach().clamp(-20.0, 20.0)
    return torch.exp(log_w).clamp(max=cap) * mask.to(old_logprobs.dtype)


@dataclass(frozen=True)
class PolicyLossInput:
    """What a registered policy loss gets for one micro-batch (`[B, T]` tensors).

    Attributes:
        logprobs: the trainer's log-probabilities of the sampled tokens, with gradient.
        old_logprobs: the same under the weights that sampled (detached).
        advantages: per-token advantages (0 off the mask).
        mask: 1 on sampled tokens of included samples.
        agg: the aggregation (`algorithm.loss_agg`).
        denominator: the mini-batch count `aggregate` divides by (so gradient accumulation is exact).
        norm_len: the constant length of `token-sum-norm`.
        is_weights: truncated importance weights (rollout engine vs trainer), or None.
    """

    logprobs: torch.Tensor
    old_logprobs: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor
    agg: LossAgg = "token-mean"
    denominator: float | None = None
    norm_len: int | None = None
    is_weights: torch.Tensor | None = None


@dataclass(frozen=True)
class PolicyLossOutput:
    """The scalar loss to minimise and its detached diagnostics (`actor/...` metric names): floats or 0-d tensors
    (tensors are read back once per optimizer step)."""

    loss: torch.Tensor
    stats: dict[str, float | torch.Tensor]


def _stats(s: PolicyLossStats) -> dict[str, torch.Tensor]:
    return {"actor/clip_frac": s.clip_frac, "actor/approx_kl": s.approx_kl, "actor/ratio_mean": s.ratio_mean,
            "actor/ratio_max": s.ratio_max}


def ppo_clip_loss(inp: PolicyLossInput, config: object) -> PolicyLossOutput:
    """`algorithm.policy_loss=ppo`: token-level clipped surrogate with clip-higher (`clip_ratio_high`) and dual-clip."""
    loss, s = policy_loss(inp.logprobs, inp.old_logprobs, inp.advantages, inp.mask,
                          clip_low=float(getattr(config, "clip_ratio", 0.2)),
                          clip_high=getattr(config, "clip_ratio_high", None), agg=inp.agg,
                          denominator=inp.denominator, dual_clip=getattr(config, "dual_clip", None),
                          is_weights=inp.is_weights, norm_len=inp.norm_len)
    return PolicyLossOutput(loss, _stats(s))


def gspo_loss(inp: PolicyLossInput, config: object) -> PolicyLossOutput:
    """`algorithm.policy_loss=gspo`: the sequence-level ratio, clipped with `clip_ratio` / `clip_ratio_high`."""
    loss, s = gspo_policy_loss(inp.logprobs, inp.old_logprobs, inp.advantages, inp.mask,
                               clip_low=float(getattr(config, "clip_ratio", 3e-4)),
                               clip_high=getattr(config, "clip_ratio_high", None), agg=inp.agg,
                               denominator=inp.denominator, dual_clip=getattr(config, "dual_clip", None),
                               is_weights=inp.is_weights, norm_len=inp.norm_len)
    return PolicyLossOutput(loss, _stats(s))
