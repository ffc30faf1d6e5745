"""How the trainer and evaluation get trajectories: n episodes per task through the agent loop.

`run_rollouts` is the single call site of the agent loop for training and
evaluation (the colocated trainer rank, separate engine actors and `toolrl
eval` all call it), so every path renders prompts with the same code
(`render_prompt`) and runs the same episode logic. Trajectories come back
task-major: the n samples of `tasks[0]`, then those of `tasks[1]`, …, each
stamped with the weight version that sampled it.

Seeds: the agent loop seeds sample i of task t from (trainer.seed, `seed`,
t.id, i), so a step's samples do not depend on batching, timing or which
engine ran them, and a resumed run draws the same tokens as an uninterrupted one.
`seed` may also give one step seed per task: several steps' batches then run as
one set of concurrent episodes (one engine batch), each with its own step's seeds
(`trainer.async_rollouts.steps_per_rollout`).

Episodes run on the process's runtime (`toolrl.runtime.current()`): its event
loop, and its environment context, where run-scoped resources (a sandbox
pool, an embedding model) stay usable from step to step.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

from toolrl.env import EnvContext
from toolrl.types import Task, Trajectory


def run_rollouts(backend: Any, tokenizer: Any, tasks: Sequence[Task], n: int, cfg: Any,
                 env_ctx: EnvContext | None = None, *, seed: int | Sequence[int], temperature: float | None = None,
                 weight_version: int = 0) -> list[Trajectory]:
    """`n` episodes of every task (task-major), sampled with `cfg.rollout` (temperature overridable).

    `seed` is the step seed, or one per task (all episodes still run concurrently). `env_ctx` defaults to the
    process runtime's context (configured with `cfg.envs`).
    """
    from toolrl import runtime
    from toolrl.rollout.agent_loop import LoopSettings, run_episodes

    rt = runtime.current()
    ctx = env_ctx if env_ctx is not None else rt.configure(cfg.envs).env
    overrides = {} if temperature is None else {"temperature": temperature}
    settings = LoopSettings.from_config(cfg.rollout, seed=cfg.trainer.seed, envs=cfg.envs, **overrides)
    if isinstance(seed, int):
        trajs = rt.run(run_episodes(list(tasks), n, backend, tokenizer, settings, ctx, step=seed))
    else:
        runs = seed_runs(seed, len(tasks))
        parts = rt.run(_gather(*(run_episodes(list(tasks[a:b]), n, backend, tokenizer, settings, ctx, step=s)
                                 for s, a, b in runs)))
        trajs = [t for part in parts for t in part]
    if weight_version:
        trajs = [dataclasses.replace(t, weight_version=weight_version) for t in trajs]
    return trajs


def seed_runs(seeds: Sequence[int], n_tasks: int) -> list[tuple[int, int, int]]:
    """(seed, start, stop) for each run of equal consecutive per-task seeds."""
    if len(seeds) != n_tasks:
        raise ValueError(f"{len(seeds)} task seeds for {n_tasks} tasks")
    runs, start = [], 0
    for seed, group in itertools.groupby(seeds):
        size = len(list(group))
        runs.append((int(seed), start, start + size))
        start += size
    return runs


async def _gather(*coros: Any) -> list[Any]:
    import asyncio

    return list(await asyncio.gather(*coros))
