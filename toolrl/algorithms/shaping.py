"""Reward-side shaping and batch selection (DAPO): overlong penalty, dynamic sampling.

Pure functions over plain numbers; the trainer step calls them between the
rewards and the advantages.

Overlong shaping (DAPO, Yu et al. 2025, eq. 13): with the length cap `L_max`
and a buffer `L_cache`, a response of `L` tokens gets

    0                                   if L <= L_max - L_cache
    ((L_max - L_cache) - L) / L_cache   if L_max - L_cache < L <= L_max   (0 -> -1 linearly)
    -1                                  if L > L_max

times `factor`, added to its reward: the soft penalty tells the policy it is
running out of room before the hard cut-off does.

Dynamic sampling (DAPO): a group whose rewards are all equal has advantage 0
for every group estimator, so it adds nothing but noise to the batch. Such groups
are dropped and more prompts are rolled out until `target` informative groups
are collected or `max_draws` rollout rounds have run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


def overlong_penalty(length: int, max_len: int, buffer: int, factor: float = 1.0) -> float:
    """DAPO's soft overlong penalty for one response of `length` tokens (0 when `buffer` is 0 and L <= max_len)."""
    if max_len < 1:
        raise ValueError(f"max_len must be positive, got {max_len}")
    if buffer < 0 or buffer > max_len:
        raise ValueError(f"the overlong buffer must be in [0, max_len={max_len}], got {buffer}")
    start = max_len - buffer
    if length > max_len:
        return -factor
    if length <= start:
        return 0.0
    return factor * (start - length) / buffer


def overlong_penalties(lengths: Sequence[int], max_len: int, buffer: int, factor: float = 1.0) -> list[float]:
    return [overlong_penalty(n, max_len, buffer, factor) for n in lengths]


def informative_groups(scores: Sequence[float | None], group_ids: Sequence[str]) -> list[str]:
    """Ids of groups (first-seen order) with at least 2 included samples whose scores are not all equal.

    `None` scores (excluded samples) do not count.
    """
    groups: dict[str, list[float]] = {}
    for s, g in zip(scores, group_ids):
        groups.setdefault(g, [])
        if s is not None:
            groups[g].append(float(s))
    return [g for g, vals in groups.items() if len(vals) >= 2 and max(vals) > min(vals)]


@dataclass(frozen=True)
class Draw:
    """One rollout round: per-sample payloads (trajectories...), scores (None = excluded) and group ids.

    Group ids must be unique across draws (e.g. "draw:slot")."""

    samples: Sequence[Any]
    scores: Sequence[float | None]
    group_ids: Sequence[str]


@dataclass
class DynamicSample:
    """What `dynamic_sample` kept: the samples, their scores and group ids (whole groups, draw order)."""

    samples: list[Any] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    group_ids: list[str] = field(default_factory=list)
    draws: int = 0
    groups_seen: int = 0
    groups_kept: int = 0
    full: bool = False

    def metrics(self) -> dict[str, float]:
        return {
            "rollout/dynamic_sampling_draws": float(self.draws),
            "rollout/dynamic_sampling_groups_seen": float(self.groups_seen),
            "rollout/dynamic_sampling_groups_kept": float(self.groups_kept),
            "rollout/dynamic_sampling_full": float(self.full),
        }


def dynamic_sample(draw: Callable[[int], Draw], target: int, max_draws: int) -> DynamicSample:
    """Call `draw(k)` for k = 0, 1, ... until `target` informative groups are kept or `max_draws` rounds ran.

    Groups beyond `target` are dropped (the batch keeps its size). When the cap
    is reached with fewer groups, the step trains on those; when no round gave a
    single informative group, the first round is kept whole (every advantage is
    0 then, and the run's `reward/zero_std_groups` shows it).
    """
    if target < 1 or max_draws < 1:
        raise ValueError(f"target ({target}) and max_draws ({max_draws}) must be at least 1")
    out = DynamicSample()
    first: Draw | None = None
    while out.groups_kept < target and out.draws < max_draws:
        d = draw(out.draws)
        out.draws += 1
        first = first or d
        if not (len(d.samples) == len(d.scores) == len(d.group_ids)):
            raise ValueError("a draw's samples, scores and group_ids must have equal length")
        keep = informative_groups(d.scores, d.group_ids)
        out.groups_seen += len(dict.fromkeys(d.group_ids))
        keep = keep[: target - out.groups_kept]
        wanted = set(keep)
        for s, r, g in zip(d.samples, d.scores, d.group_ids):
            if g in wanted:
                out.samples.append(s)
                out.scores.append(r)
                out.group_ids.append(g)
        out.groups_kept += len(keep)
    out.full = out.groups_kept >= target
    if out.groups_kept == 0 and first is not None:
        logger.warning("dynamic sampling: no group with differing rewards in %d rollout round(s); training on the "
                       "first round as it is (all group advantages are 0)", out.draws)
        out.samples, out.scores, out.group_ids = list(first.samples), list(first.scores), list(first.group_ids)
    elif not out.full:
        logger.info("dynamic sampling: %d of %d informative groups after %d rounds (algorithm.max_sampling_draws)",
                    out.groups_kept, target, out.draws)
    return out
