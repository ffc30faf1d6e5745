"""Environments that run whole episodes themselves: the `EpisodeDriver` protocol and its dispatch.

Most environments execute tool calls inside toolrl's agent loop. An episode
driver instead takes over whole episodes: `env: program` (the
`toolrl-env-program` distribution) runs a user's own agent program against an
OpenAI-compatible endpoint in front of the rollout backend and records every
call as token ids (`toolrl.rollout.program_record`). A driver is registered
through `register_environments` like any environment; `run_episodes` sends the
episodes of its tasks to it and the others through the agent loop, so the
trainer and `toolrl eval` use both the same way:

    class MyDriver:
        def __call__(self, ctx, **args): raise ToolrlError("drives whole episodes")   # registries need a callable
        async def run_episodes(self, jobs, services): return [... one Trajectory per job ...]

    @hookimpl
    def register_environments(register):
        register("my-driver", MyDriver())
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from toolrl.types import Task, Trajectory


@dataclass(frozen=True)
class EpisodeJob:
    """One episode for a driver: sample `sample_index` of `task`, with the environment's arguments
    (the config's `envs.<name>` defaults overlaid with the task's `env_args`)."""

    task: Task
    sample_index: int
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RolloutServices:
    """What a driver gets from `run_episodes`.

    Attributes:
        backend: the rollout backend (`toolrl.rollout.base.RolloutBackend`).
        tokenizer: the policy's tokenizer (with its chat template).
        settings: the run's `toolrl.rollout.agent_loop.LoopSettings` (sampling, limits, seed, debug).
        ctx: the run-scoped `toolrl.env.EnvContext`.
        step: the step (or evaluation) number the seeds derive from.
    """

    backend: Any
    tokenizer: Any
    settings: Any
    ctx: Any
    step: int = 0


@runtime_checkable
class EpisodeDriver(Protocol):
    """An environment that runs whole episodes (see the module doc)."""

    async def run_episodes(self, jobs: Sequence[EpisodeJob], services: RolloutServices) -> list[Trajectory]:
        """One trajectory per job, in order. One episode's failure is that trajectory's
        `finish_reason="error"`, never an exception; raise only for a misconfiguration found before
        anything ran (a bad `env_args`), with an error that says how to fix it."""
        ...


def episode_drivers(tasks: Sequence[Task], environments: Any) -> dict[str, EpisodeDriver]:
    """The registered environments among `tasks`' that are episode drivers, by name."""
    out: dict[str, EpisodeDriver] = {}
    for name in sorted({t.env for t in tasks if t.env}):
        obj = environments.get(name)
        if isinstance(obj, EpisodeDriver):
            out[name] = obj
    return out


async def run_mixed(tasks: Sequence[Task], n: int, drivers: Mapping[str, EpisodeDriver], services: RolloutServices,
                    episode: Callable[[Task, int], Awaitable[Trajectory]]) -> list[Trajectory]:
    """n episodes of every task, task-major: driven tasks through their driver (one call per driver,
    all its episodes at once), the others through `episode(task, sample_index)`; all concurrently."""
    slots: list[Awaitable[Trajectory] | None] = []
    jobs: dict[str, list[tuple[int, EpisodeJob]]] = {}
    defaults = services.settings.env_defaults
    for task in tasks:
        for i in range(n):
            if task.env in drivers:
                args = {**dict(defaults.get(task.env, {}) or {}), **dict(task.env_args)}
                jobs.setdefault(task.env, []).append((len(slots), EpisodeJob(task, i, args)))
                slots.append(None)
            else:
                slots.append(episode(task, i))
    out: list[Trajectory | None] = [None] * len(slots)

    async def plain(k: int, coro: Awaitable[Trajectory]) -> None:
        out[k] = await coro

    async def driven(name: str, items: list[tuple[int, EpisodeJob]]) -> None:
        trajs = await drivers[name].run_episodes([job for _, job in items], services)
        if len(trajs) != len(items):
            raise RuntimeError(f"environment {name!r} returned {len(trajs)} trajectories for {len(items)} episodes")
        for (k, _), t in zip(items, trajs):
            out[k] = t

    running = [asyncio.ensure_future(plain(k, c)) for k, c in enumerate(slots) if c is not None]
    running += [asyncio.ensure_future(driven(name, items)) for name, items in jobs.items()]
    try:
        await asyncio.gather(*running)
    finally:  # a driver that refused its configuration stops the others too
        for t in running:
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    return [t for t in out if t is not None]
