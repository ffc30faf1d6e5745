"""Steps 1-3 of an RL step with DAPO's batch shaping: prompts, rollouts and rewards, then dynamic sampling
and overlong shaping (`algorithm.dynamic_sampling`, `algorithm.overlong_buffer`; docs/algorithms.md).

Without either switch this is exactly one round: `data.prompts_per_step`
prompts, `rollout.n` episodes each with the step seed, one reward pass. With
dynamic sampling, groups whose rewards are all equal are dropped and further
rounds (new prompts from the same resumable sampler, seeds derived from the
step seed) run until the batch holds `data.prompts_per_step` informative
groups or `algorithm.max_sampling_draws` rounds ran
(`toolrl.algorithms.shaping.dynamic_sample`). Overlong shaping then adds
DAPO's soft length penalty to each included sample's score (the reward
metrics keep the unshaped rewards).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolrl.algorithms.shaping import Draw, dynamic_sample, overlong_penalty
from toolrl.types import RewardResult, Task, Trajectory


@dataclass
class Collected:
    """The step's samples (task-major within each round, whole groups), their rewards and shaped scores."""

    prompts: list[Task]  # one per sample group, in order
    trajectories: list[Trajectory]
    results: list[RewardResult]
    scores: list[float | None]  # the training scores: reward total (+ overlong penalty); None = excluded
    metrics: dict[str, float] = field(default_factory=dict)


def round_seed(seed: int, round_index: int) -> int:
    """Round 0 uses the step seed itself (so dynamic sampling off changes nothing); later rounds derive one."""
    return seed if round_index == 0 else (seed * 31 + round_index * 1_000_033) % (2**31 - 1)


def collect(cfg: Any, next_prompts: Callable[[], Sequence[Task]],
            rollout: Callable[[Sequence[Task], int], list[Trajectory]],
            score: Callable[[Sequence[Trajectory], Sequence[Task]], tuple[list[RewardResult], dict[str, float]]],
            seed: int) -> Collected:
    """Run rounds of `rollout(prompts, seed)` + `score(trajectories, prompts)` as the config asks.

    Args:
        next_prompts: the next `data.prompts_per_step` tasks (the run's sampler).
        rollout: `rollout.n` episodes per prompt, task-major.
        score: rewards per trajectory and the reward metrics (`compute_rewards_sync`).
    """
    alg, n = cfg.algorithm, cfg.rollout.n
    reward_metrics: dict[str, float] = {}

    def one_round(k: int) -> Draw:
        prompts = list(next_prompts())
        trajs = rollout(prompts, round_seed(seed, k))
        results, m = score(trajs, prompts)
        for key, v in m.items():  # timings add up over rounds; the other figures are the first round's
            if k == 0 or key.startswith(("reward/seconds/", "timing/")):
                reward_metrics[key] = reward_metrics.get(key, 0.0) + v if k else v
        samples = [(p, t, r) for i, p in enumerate(prompts) for t, r in
                   zip(trajs[i * n : (i + 1) * n], results[i * n : (i + 1) * n])]
        group_ids = [f"{k}:{i}" for i in range(len(prompts)) for _ in range(n)]
        return Draw(samples, [r.total for r in results], group_ids)

    if alg.dynamic_sampling:
        picked = dynamic_sample(one_round, cfg.data.prompts_per_step, alg.max_sampling_draws)
        samples, extra = picked.samples, picked.metrics()
    else:
        samples, extra = list(one_round(0).samples), {}
    prompts = [p for j, (p, _, _) in enumerate(samples) if j % n == 0]
    trajs = [t for _, t, _ in samples]
    results = [r for _, _, r in samples]
    scores = [r.total for r in results]
    if alg.overlong_buffer > 0:
        max_len = cfg.rollout.max_total_tokens
        penalties = [overlong_penalty(len(t.response_ids), max_len, alg.overlong_buffer, alg.overlong_penalty)
                     for t in trajs]
        scores = [None if s is None else s + p for s, p in zip(scores, penalties)]
        extra["reward/overlong_penalty"] = sum(penalties) / max(len(penalties), 1)
        extra["reward/overlong_share"] = sum(p < 0 for p in penalties) / max(len(penalties), 1)
    return Collected(prompts, trajs, results, scores, {**reward_metrics, **extra})
