"""How the trainer and evaluation get trajectories: n episodes per task through the agent loop.

`run_rollouts` is the single call site of the agent loop for training and
evaluation, so both render prompts with the same code (`render_prompt`) and
run the same episode logic. Trajectories come back task-major: the n samples
of `tasks[0]`, then those of `tasks[1]`, … (the trainer's GRPO groups rely on
this order).

Seeds: the agent loop seeds sample i of task t from (trainer.seed, `seed`,
t.id, i), so a step's samples do not depend on batching or timing, and a
resumed run draws the same tokens as an uninterrupted one.

Episodes run on one process-wide event loop (`toolrl.rewards.reward_loop`),
so run-scoped environment resources in `env_ctx` (a sandbox pool, an
embedding model) stay usable from step to step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from toolrl.types import Task, Trajectory


def run_rollouts(backend: Any, tokenizer: Any, tasks: Sequence[Task], n: int, cfg: Any, env_ctx: Any, *,
                 seed: int, temperature: float | None = None) -> list[Trajectory]:
    """`n` episodes of every task (task-major), sampled with `cfg.rollout` (temperature overridable)."""
    from toolrl.rewards import reward_loop
    from toolrl.rollout.agent_loop import LoopSettings, run_episodes

    overrides = {} if temperature is None else {"temperature": temperature}
    settings = LoopSettings.from_config(cfg.rollout, seed=cfg.trainer.seed, envs=cfg.envs, **overrides)
    coro = run_episodes(list(tasks), n, backend, tokenizer, settings, env_ctx, step=seed)
    return reward_loop().run_until_complete(coro)
