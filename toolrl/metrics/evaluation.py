"""Evaluation metrics over sampled trajectories and their rewards (`eval/…`).

- `eval/accuracy`: share of samples that are correct (the reward named by
  `trainer.accuracy_reward`, or the total, is >= `trainer.success_threshold`).
- `eval/pass@k`: the unbiased estimator of Chen et al. (2021): with n samples
  per task of which c are correct, `1 - C(n-c, k) / C(n, k)`, averaged over
  tasks, for k = 1, 2, 4, … up to n.
- `eval/reward_mean`, `eval/reward_std`: over included samples.
- lengths, turns, tool calls, tool errors, and diversity (distinct-1/2, bigram entropy).

Excluded samples (a reward returned None, or the sandbox failed) count as not
correct and are reported in `eval/excluded`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from toolrl.errors import ToolrlError
from toolrl.metrics.rollout_stats import is_correct, rollout_metrics
from toolrl.types import RewardResult, Task, Trajectory


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def ks_for(n: int) -> list[int]:
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    ks.append(n)
    return ks


def eval_temperature(cfg: Any, n: int) -> float:
    """trainer.eval_temperature, else greedy for one sample per task and the rollout temperature for several."""
    if cfg.trainer.eval_temperature is not None:
        return cfg.trainer.eval_temperature
    return 0.0 if n == 1 else cfg.rollout.temperature


def correctness(trajectories: Sequence[Trajectory], results: Sequence[RewardResult], accuracy_reward: str | None,
                threshold: float) -> dict[str, list[bool]]:
    """task id -> correctness of each of its samples, in sample order (excluded samples are False)."""
    out: dict[str, list[bool]] = {}
    for t, r in zip(trajectories, results):
        out.setdefault(t.task_id, []).append(bool(is_correct(r, accuracy_reward, threshold)))
    return out


def eval_metrics(trajectories: Sequence[Trajectory], results: Sequence[RewardResult], n: int,
                 accuracy_reward: str | None = None, threshold: float = 1.0, prefix: str = "eval/") -> dict[str, float]:
    per_task = correctness(trajectories, results, accuracy_reward, threshold)
    flags = [f for fs in per_task.values() for f in fs]
    m: dict[str, float] = {
        f"{prefix}accuracy": sum(flags) / len(flags) if flags else 0.0,
        f"{prefix}num_tasks": float(len(per_task)),
        f"{prefix}num_samples": float(len(flags)),
        f"{prefix}excluded": float(sum(r.total is None for r in results)),
    }
    for k in ks_for(n):
        vals = [pass_at_k(len(fs), sum(fs), k) for fs in per_task.values() if len(fs) >= k]
        if vals:
            m[f"{prefix}pass@{k}"] = sum(vals) / len(vals)
    totals = [r.total for r in results if r.total is not None]
    if totals:
        mean = sum(totals) / len(totals)
        m[f"{prefix}reward_mean"] = mean
        m[f"{prefix}reward_std"] = math.sqrt(sum((x - mean) ** 2 for x in totals) / (len(totals) - 1)) if len(totals) > 1 else 0.0
    components = sorted({k for r in results for k in r.components})
    for name in components:
        vals = [r.components[name] for r in results if r.components.get(name) is not None]
        if vals:
            m[f"{prefix}reward/{name}"] = sum(vals) / len(vals)  # type: ignore[arg-type]
    m.update(rollout_metrics(trajectories, prefix=prefix))
    return m


Evaluator = Callable[..., Mapping[str, float]]


def run_evaluators(evaluators: Sequence[tuple[str, Evaluator]], trajectories: Sequence[Trajectory],
                   tasks: Sequence[Task], rewards: Sequence[RewardResult], prefix: str = "eval/") -> dict[str, float]:
    """Call each registered evaluator `fn(trajectories, *, tasks, rewards) -> dict[str, float]`.

    `tasks[i]` is the task of `trajectories[i]`; `rewards[i]` its RewardResult.
    Metrics come back as `eval/<evaluator>/<key>`.
    """
    by_id = {t.id: t for t in tasks}
    aligned = [by_id[t.task_id] for t in trajectories]
    out: dict[str, float] = {}
    for name, fn in evaluators:
        try:
            got = fn(list(trajectories), tasks=aligned, rewards=list(rewards))
        except Exception as exc:
            raise ToolrlError(f"evaluator {name!r} raised {type(exc).__name__}: {exc}", where=f"evaluator {name!r}",
                              fix="fix the evaluator, or remove it from trainer.evaluators") from exc
        if not isinstance(got, Mapping):
            raise ToolrlError(f"evaluator {name!r} returned {type(got).__name__}, not a dict of metric -> float",
                              where=f"evaluator {name!r}", fix="return e.g. {'exact_match': 0.5}")
        for key, value in got.items():
            try:
                out[f"{prefix}{name}/{key}"] = float(value)
            except (TypeError, ValueError):
                raise ToolrlError(f"evaluator {name!r} returned a non-number for {key!r}: {value!r}",
                                  where=f"evaluator {name!r}", fix="return floats") from None
    return out
