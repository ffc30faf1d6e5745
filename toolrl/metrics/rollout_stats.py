"""Per-step statistics of trajectories and rewards (`rollout/…`, `reward/…`)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from toolrl.metrics.diversity import diversity_metrics
from toolrl.types import FINISH_REASONS, RewardResult, Trajectory


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _std(xs: Sequence[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def rollout_metrics(trajectories: Sequence[Trajectory], prefix: str = "rollout/") -> dict[str, float]:
    """Lengths, turns, tool calls and errors, finish reasons and diversity of a batch.

    `response_length` counts sampled tokens (what the policy wrote);
    `total_length` adds the tool-result tokens appended between turns.
    """
    if not trajectories:
        return {}
    n = len(trajectories)
    sampled = [float(t.num_sampled_tokens) for t in trajectories]
    m: dict[str, float] = {
        f"{prefix}response_length": _mean(sampled),
        f"{prefix}response_length_max": max(sampled),
        f"{prefix}total_length": _mean([float(len(t.response_ids)) for t in trajectories]),
        f"{prefix}prompt_length": _mean([float(len(t.prompt_ids)) for t in trajectories]),
        f"{prefix}num_turns": _mean([float(t.num_turns) for t in trajectories]),
        f"{prefix}tool_calls": _mean([float(len(t.tool_calls)) for t in trajectories]),
        f"{prefix}tool_errors": _mean([float(t.tool_errors) for t in trajectories]),
        f"{prefix}malformed_tool_calls": _mean([float(t.malformed_tool_calls) for t in trajectories]),
        f"{prefix}infra_errors": float(sum(t.infra_error for t in trajectories)),
        f"{prefix}errors": float(sum(t.error is not None for t in trajectories)),
    }
    reasons = Counter(t.finish_reason for t in trajectories)
    for r in FINISH_REASONS:
        m[f"{prefix}finish/{r}"] = reasons.get(r, 0) / n
    m.update(diversity_metrics([t.completion_text for t in trajectories], prefix=prefix))
    return m


def is_correct(result: RewardResult, accuracy_reward: str | None, threshold: float) -> bool | None:
    """Whether a sample counts as solved: the named component (or the total) >= threshold; None if excluded."""
    value = result.total if accuracy_reward is None else result.components.get(accuracy_reward)
    if value is None:
        return None
    return value >= threshold


def reward_metrics(
    results: Sequence[RewardResult],
    accuracy_reward: str | None = None,
    threshold: float = 1.0,
    prefix: str = "reward/",
) -> dict[str, float]:
    """`mean`, `std`, `min`, `max` of the totals over included samples, and `accuracy`.

    `accuracy` is reported when `accuracy_reward` names a component, or, when it
    is None, when every included total is 0 or 1 (a binary reward).
    """
    totals = [r.total for r in results if r.total is not None]
    m: dict[str, float] = {}
    if totals:
        m[f"{prefix}mean"] = _mean(totals)
        m[f"{prefix}std"] = _std(totals)
        m[f"{prefix}min"] = min(totals)
        m[f"{prefix}max"] = max(totals)
    binary = bool(totals) and all(t in (0.0, 1.0) for t in totals)
    if accuracy_reward is not None or binary:
        flags = [c for c in (is_correct(r, accuracy_reward, threshold) for r in results) if c is not None]
        if flags:
            m[f"{prefix}accuracy"] = sum(flags) / len(flags)
    return m
