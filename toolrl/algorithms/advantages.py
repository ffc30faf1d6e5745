"""Advantage estimators: grpo, dr_grpo, rloo, reinforce_pp (+ group baseline) and ppo (GAE with a critic).

An estimator is a function `fn(batch: AdvantageInput, config) -> AdvantageOutput`
registered through the `register_advantage_estimators` hook, where `config` is
the run's `AlgorithmConfig` (`norm_adv_by_std`, `gamma`, `lam`, ...). Declare
what it needs with `toolrl.algorithms.spec.declare`: `groups=True` when it
compares the samples of a prompt (the config then requires `rollout.n >= 2`),
`critic=True` when it needs a value model (the trainer starts the critic worker
and fills `batch.values`; `@needs_critic` is the short form).

    from toolrl import hookimpl
    from toolrl.algorithms.advantages import AdvantageOutput, broadcast_to_tokens

    def best_of_group(batch, config):
        ...  # scores -> one advantage per sample
        return AdvantageOutput(broadcast_to_tokens(adv, batch.response_mask))

    @hookimpl
    def register_advantage_estimators(register):
        register("best_of_group", best_of_group)

Excluded samples (reward None, infrastructure failure) have `valid = False`:
they are left out of group statistics and get advantage 0; the trainer also
drops them from the loss mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch

from toolrl.algorithms.losses import masked_whiten
from toolrl.algorithms.spec import declare, estimator_needs

EPS = 1e-6


@dataclass(frozen=True)
class AdvantageInput:
    """One step's batch, as an estimator sees it.

    Attributes:
        scores: `[B]` sequence-level reward of each sample (0 where invalid).
        response_mask: `[B, T]` 1 on sampled response tokens.
        group_ids: `B` ids; samples of the same prompt share one (GRPO/RLOO groups).
        valid: `[B]` bool, False for excluded samples.
        token_rewards: `[B, T]` per-token rewards added to the score (the KL
            penalty when `algorithm.kl_in=reward`), or None.
        values: `[B, T]` critic values at each response position (PPO), or None.
    """

    scores: torch.Tensor
    response_mask: torch.Tensor
    group_ids: Sequence[str]
    valid: torch.Tensor
    token_rewards: torch.Tensor | None = None
    values: torch.Tensor | None = None


@dataclass(frozen=True)
class AdvantageOutput:
    """`advantages` `[B, T]` (0 off the mask); `returns` `[B, T]` value targets when a critic is used."""

    advantages: torch.Tensor
    returns: torch.Tensor | None = None


class AdvantageEstimator(Protocol):
    def __call__(self, batch: AdvantageInput, config: Any) -> AdvantageOutput: ...


F = TypeVar("F", bound=Callable[..., AdvantageOutput])


def needs_critic(fn: F) -> F:
    """Mark an estimator that needs critic values (the trainer starts the critic worker)."""
    return declare(critic=True, groups=bool(getattr(fn, "needs_groups", False)))(fn)


def uses_critic(fn: Callable[..., Any]) -> bool:
    return estimator_needs(fn).critic


def broadcast_to_tokens(per_sample: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """`[B]` -> `[B, T]`: each sample's value on its masked tokens, 0 elsewhere."""
    return per_sample.unsqueeze(-1) * response_mask.to(per_sample.dtype)


def sequence_scores(batch: AdvantageInput) -> torch.Tensor:
    """Score plus the sum of per-token rewards over the sample's masked tokens."""
    scores = batch.scores.to(torch.float32)
    if batch.token_rewards is not None:
        scores = scores + (batch.token_rewards * batch.response_mask).sum(-1)
    return scores


@dataclass(frozen=True)
class GroupStats:
    """Each sample's group statistics over the valid samples (`group_stats`), all `[B]`.

    Attributes:
        member: True for a valid sample (counted in its group), False for an excluded one.
        count: valid samples in the sample's group (0 for an excluded sample).
        total: sum of the group's valid scores.
        mean: the group's mean valid score.
        std: the group's unbiased standard deviation (0 where `count < 2`).
        constant: True where every valid score of the group is the same (so there is nothing to compare).
    """

    member: torch.Tensor
    count: torch.Tensor
    total: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    constant: torch.Tensor

    @property
    def informative(self) -> torch.Tensor:
        """`[B]` bool: a valid sample whose group has two or more valid samples that do not all score the same."""
        return self.member & (self.count >= 2) & ~self.constant


def group_stats(scores: torch.Tensor, group_ids: Sequence[str], valid: torch.Tensor) -> GroupStats:
    """Group statistics of `scores` `[B]` over the valid samples, for every group at once (a few tensor operations
    whatever the number of groups: `grpo` on 32 groups of 8 takes 0.36 ms against 2.19 ms with a loop over the
    groups on the 2-core development CPU, benchmarks/host_overhead_bench.py).

    `constant` is decided on the scores themselves (max == min), not on `std`: the mean of equal float32 values
    can be off by an ulp (e.g. eight scores of 1.2), which divided by a tiny std would give every sample of the
    group a spurious advantage.

    Raises:
        ValueError: `group_ids` or `valid` does not have one entry per score.
    """
    B = scores.shape[0]
    if len(group_ids) != B or valid.shape[0] != B:
        raise ValueError(f"{B} scores but {len(group_ids)} group ids and {valid.shape[0]} valid flags: "
                         "each sample needs one of each")
    keep = [bool(v) for v in valid.tolist()]
    number: dict[str, int] = {}
    index = [number.setdefault(g, len(number)) if ok else 0 for g, ok in zip(group_ids, keep)]
    G = max(len(number), 1)
    idx = torch.tensor(index, dtype=torch.long, device=scores.device)
    member = torch.tensor(keep, dtype=torch.bool, device=scores.device)
    zero = torch.zeros_like(scores)
    s = torch.where(member, scores, zero)  # an excluded sample's score is never read (it may be anything)
    count_g = scores.new_zeros(G).index_add_(0, idx, member.to(scores.dtype))
    total_g = scores.new_zeros(G).index_add_(0, idx, s)
    mean_g = total_g / count_g.clamp(min=1)
    dev = torch.where(member, scores - mean_g[idx], zero)
    std_g = (scores.new_zeros(G).index_add_(0, idx, dev * dev) / (count_g - 1).clamp(min=1)).sqrt()
    hi = scores.new_full((G,), float("-inf")).scatter_reduce_(0, idx[member], scores[member], "amax")
    lo = scores.new_full((G,), float("inf")).scatter_reduce_(0, idx[member], scores[member], "amin")
    count = torch.where(member, count_g[idx], zero)
    return GroupStats(member=member, count=count, total=total_g[idx], mean=mean_g[idx],
                      std=torch.where(count >= 2, std_g[idx], zero), constant=(hi == lo)[idx])


@declare(groups=True)
def grpo(batch: AdvantageInput, config: Any) -> AdvantageOutput:
    """Group-normalised advantage: `(r_i - mean_g) / (std_g + eps)`.

    `std_g` is the unbiased standard deviation of the group's valid rewards;
    with `config.norm_adv_by_std = False` only the mean is subtracted (Dr.
    GRPO). A group with a single valid sample gets advantage 0, and a group
    whose rewards are all equal gets exactly 0 (nothing to learn from it).
    """
    scores = sequence_scores(batch)
    st = group_stats(scores, batch.group_ids, batch.valid)
    centred = scores - st.mean
    if bool(getattr(config, "norm_adv_by_std", True)):
        centred = centred / (st.std + EPS)
    adv = torch.where(st.informative, centred, torch.zeros_like(scores))
    return AdvantageOutput(broadcast_to_tokens(adv, batch.response_mask))


@declare(groups=True)
def rloo(batch: AdvantageInput, config: Any) -> AdvantageOutput:
    """Leave-one-out baseline: `r_i - mean_{j != i} r_j` over the group's valid samples."""
    scores = sequence_scores(batch)
    st = group_stats(scores, batch.group_ids, batch.valid)
    loo = scores - (st.total - scores) / (st.count - 1).clamp(min=1)
    adv = torch.where(st.informative, loo, torch.zeros_like(scores))
    return AdvantageOutput(broadcast_to_tokens(adv, batch.response_mask))


def last_token_rewards(scores: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """`[B]` -> `[B, T]`: each score placed on its sample's last masked token."""
    mask = response_mask.to(scores.dtype)
    T = mask.shape[-1]
    positions = torch.arange(T, device=mask.device).expand_as(mask)
    last = torch.where(mask > 0, positions, torch.full_like(positions, -1)).max(-1).values
    out = torch.zeros_like(mask)
    rows = torch.nonzero(last >= 0).squeeze(-1)
    out[rows, last[rows]] = scores[rows]
    return out


@needs_critic
def gae(batch: AdvantageInput, config: Any) -> AdvantageOutput:
    """Generalised advantage estimation over the sampled tokens (PPO).

    Rewards: the per-token rewards (KL penalty) on every sampled token, plus
    the score on the last sampled token. Tool-result tokens (mask 0) are not
    actions: the recursion steps over them, so the token before a tool result
    bootstraps from the value of the first token after it. Advantages are then
    whitened over the valid masked tokens; returns = advantages (before
    whitening) + values.
    """
    if batch.values is None:
        raise ValueError("the gae/ppo estimator needs critic values (batch.values is None)")
    gamma = float(getattr(config, "gamma", 1.0))
    lam = float(getattr(config, "lam", 1.0))
    mask = batch.response_mask.to(torch.float32) * batch.valid.to(torch.float32).unsqueeze(-1)
    values = batch.values.to(torch.float32) * mask
    rewards = last_token_rewards(batch.scores.to(torch.float32), mask)
    if batch.token_rewards is not None:
        rewards = rewards + batch.token_rewards.to(torch.float32) * mask
    B, T = mask.shape
    adv = torch.zeros_like(mask)
    last_gae = torch.zeros(B)
    next_value = torch.zeros(B)
    for t in reversed(range(T)):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        g = delta + gamma * lam * last_gae
        adv[:, t] = g * m
        last_gae = m * g + (1 - m) * last_gae
        next_value = m * values[:, t] + (1 - m) * next_value
    returns = adv + values
    return AdvantageOutput(masked_whiten(adv, mask), returns * mask)


@declare(groups=True)
def dr_grpo(batch: AdvantageInput, config: Any) -> AdvantageOutput:
    """Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-like training"): `r_i - mean_g`, never divided by the std.

    The std division up-weights groups whose rewards barely differ (question-level
    difficulty bias); the paper drops it, whatever `norm_adv_by_std` says. Its
    other half, the length bias, is the loss aggregation: pair this estimator with
    `algorithm.loss_agg=token-sum-norm` (a constant divisor instead of each
    response's length; see `toolrl.algorithms.losses.aggregate`).
    """
    scores = sequence_scores(batch)
    st = group_stats(scores, batch.group_ids, batch.valid)
    adv = torch.where(st.informative, scores - st.mean, torch.zeros_like(scores))
    return AdvantageOutput(broadcast_to_tokens(adv, batch.response_mask))


def returns_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """`G_t = r_t + gamma * G_next` over masked tokens (tool tokens are stepped over, as in `gae`); 0 off the mask."""
    B, T = mask.shape
    out = torch.zeros_like(mask)
    running = torch.zeros(B, dtype=mask.dtype)
    for t in reversed(range(T)):
        m = mask[:, t]
        g = rewards[:, t] + gamma * running
        out[:, t] = g * m
        running = m * g + (1 - m) * running
    return out


def _reinforce_pp(scores: torch.Tensor, batch: AdvantageInput, config: Any) -> AdvantageOutput:
    gamma = float(getattr(config, "gamma", 1.0))
    mask = batch.response_mask.to(torch.float32) * batch.valid.to(torch.float32).unsqueeze(-1)
    rewards = last_token_rewards(scores, mask)
    if batch.token_rewards is not None:
        rewards = rewards + batch.token_rewards.to(torch.float32) * mask
    return AdvantageOutput(masked_whiten(returns_to_go(rewards, mask, gamma), mask))


@declare(kl_in="reward")
def reinforce_pp(batch: AdvantageInput, config: Any) -> AdvantageOutput:
    """REINFORCE++ (Hu 2025): returns-to-go of the score (last token) plus the per-token KL penalty
    (`algorithm.kl_in=auto` puts the KL in the reward for it), normalised over the *whole batch*:
    `A_t = (G_t - mean) / std` over every valid sampled token. No critic, no groups: works with `rollout.n=1`.
    """
    return _reinforce_pp(batch.scores.to(torch.float32), batch, config)


@declare(groups=True, kl_in="reward")
def reinforce_pp_baseline(batch: AdvantageInput, config: Any) -> AdvantageOutput:
    """REINFORCE++ with a group baseline: each score minus its group's mean (valid samples), then the
    returns-to-go with the KL penalty and the global batch normalisation of `reinforce_pp`."""
    scores = batch.scores.to(torch.float32)
    st = group_stats(scores, batch.group_ids, batch.valid)
    centred = torch.where(st.member & ~st.constant, scores - st.mean, torch.zeros_like(scores))
    return _reinforce_pp(centred, batch, config)


BUILTIN: dict[str, Callable[..., AdvantageOutput]] = {
    "grpo": grpo, "dr_grpo": dr_grpo, "rloo": rloo, "reinforce_pp": reinforce_pp,
    "reinforce_pp_baseline": reinforce_pp_baseline, "ppo": gae,
}
