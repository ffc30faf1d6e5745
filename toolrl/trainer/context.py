"""What a training step works on, and its phases 1-3 (prompts, rollouts, rewards).

Shared by the step driver (`toolrl.trainer.step`) and the asynchronous pipeline
(`toolrl.trainer.pipeline`), which runs the same phases ahead in its thread; kept
apart so neither imports the other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolrl.algorithms.advantages import AdvantageInput, AdvantageOutput
from toolrl.algorithms.kl import KLController
from toolrl.metrics.timing import PhaseTimer
from toolrl.rewards import PreparedReward, compute_rewards_sync
from toolrl.trainer.collect import Collected, collect
from toolrl.trainer.roles import Critic, Reference, RolloutEngines, RolloutJob, TrainerGroup
from toolrl.trainer.sampler import TaskSampler
from toolrl.types import Task, Trajectory

if TYPE_CHECKING:
    from toolrl.config import AlgorithmConfig, Config

Estimator = Callable[[AdvantageInput, "AlgorithmConfig"], AdvantageOutput]


@dataclass
class StepContext:
    """What a step needs from the run: config, data, reward and estimator functions, the roles."""

    cfg: Config
    tasks: Sequence[Task]
    sampler: TaskSampler
    rewards: Sequence[PreparedReward]
    estimator: Estimator
    kl_ctl: KLController
    trainer: TrainerGroup
    reference: Reference | None  # None: no KL term
    critic: Critic | None  # None: no critic
    engines: RolloutEngines
    pad_token_id: int
    version: int = 0  # trainer updates so far: the weight version the engines hold (async: the trainer's)
    sleep: bool | None = None  # engines sleep during the update; None = from rollout.sleep_during_update
    failed_steps: int = 0  # steps in a row whose every episode ended with an error (step.failed_episodes_check)


def step_seed(seed: int, step: int) -> int:
    """A distinct, reproducible seed per (run seed, step): resuming at step k reseeds exactly as step k did."""
    return (seed * 1_000_003 + step * 7_919) % (2**31 - 1)


def gather(step: int, ctx: StepContext, timer: PhaseTimer) -> Collected:
    """Phases 1-3: prompts from the sampler, n rollouts each (task-major, each stamped with the weight version
    that sampled it), rewards (weighted sum of the reward plugins, None = excluded from the update). With
    algorithm.dynamic_sampling / overlong_buffer, collect() runs more rounds and shapes the scores."""
    cfg = ctx.cfg

    def rollout(tasks: Sequence[Task], round_seed: int) -> list[Trajectory]:
        with timer("rollout"):
            return ctx.engines.rollout(RolloutJob(tuple(tasks), cfg.rollout.n, round_seed))

    seed = step_seed(cfg.trainer.seed, step)
    return collect(cfg, lambda: [ctx.tasks[i] for i in ctx.sampler.next_indices()], rollout, _scorer(ctx, timer),
                   seed)


def _scorer(ctx: StepContext, timer: PhaseTimer) -> Callable[[Sequence[Trajectory], Sequence[Task]],
                                                             tuple[list[Any], dict[str, float]]]:
    """Phase 3 for `collect`: the weighted reward plugins, timed as `reward`."""

    def score(trajs: Sequence[Trajectory], tasks: Sequence[Task]) -> tuple[list[Any], dict[str, float]]:
        with timer("reward"):
            return compute_rewards_sync(trajs, tasks, ctx.rewards)

    return score


def gather_many(steps: Sequence[int], ctx: StepContext, timers: Sequence[PhaseTimer]
                ) -> list[tuple[Collected, dict[str, int]]]:
    """Phases 1-3 of several steps with one rollout job (trainer.async_rollouts.steps_per_rollout): each step's
    prompts are drawn in order, all their episodes run together (one engine batch, each with its own step's
    seeds, so the samples are those `gather` would draw), then each batch is scored on its own. Returns each
    step's Collected and the sampler's state after its prompts (what a checkpoint at that step saves).
    `timers[i]` gets step i's phases; the shared rollout's seconds go to each of them."""
    cfg = ctx.cfg
    if cfg.algorithm.dynamic_sampling:  # the config check refuses this combination first
        raise ValueError("gather_many cannot run dynamic sampling (more rounds per step)")
    n = cfg.rollout.n
    drawn = []
    for step in steps:
        prompts = [ctx.tasks[i] for i in ctx.sampler.next_indices()]
        drawn.append((prompts, dict(ctx.sampler.state_dict()), step_seed(cfg.trainer.seed, step)))
    job = RolloutJob(tuple(t for prompts, _, _ in drawn for t in prompts), n, drawn[0][2],
                     task_seeds=tuple(seed for prompts, _, seed in drawn for _ in prompts))
    t0 = time.perf_counter()
    trajs = ctx.engines.rollout(job)
    seconds = time.perf_counter() - t0
    out, start = [], 0
    for (prompts, state, seed), timer in zip(drawn, timers):
        part, start = trajs[start:start + len(prompts) * n], start + len(prompts) * n
        timer.add("rollout", seconds)
        # one round (no dynamic sampling): collect asks for these prompts' rollouts once, with the step seed
        out.append((collect(cfg, lambda p=prompts: p, lambda tasks, s, part=part: part, _scorer(ctx, timer), seed),
                    state))
    return out
