"""The roles over one `PolicyRank` in this process: training steps without Ray.

    from toolrl.config import Config
    from toolrl.trainer.local import local_context
    from toolrl.trainer.pipeline import make_pipeline
    from toolrl.trainer.step import train_step

    ctx = local_context(cfg, plugins=[MyRewards()])         # the rank, its colocated engine, sampler, rewards
    pipeline = make_pipeline(ctx, 1, cfg.trainer.total_steps)   # None unless async_rollouts.max_staleness > 0
    try:
        for step in range(1, cfg.trainer.total_steps + 1):
            metrics = train_step(step, ctx, pipeline)
    finally:
        if pipeline is not None:
            pipeline.close()
        ctx.engines.close()

The step and the pipeline are the same code `toolrl train` runs; only the Ray
actors are replaced by direct calls (one trainer rank, a colocated engine, the
reference/critic inside the rank). For a single GPU machine without Ray (the GPU
benchmarks) and for fast tests. No checkpoints, evaluation or metric sinks:
`toolrl.train` does those.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from toolrl.trainer.batch import TrainBatch
from toolrl.trainer.ranks import PolicyRank
from toolrl.trainer.roles import PolicyUpdate, Ready, RolloutJob, TrainerInfo, WeightUpdate
from toolrl.types import Trajectory

logger = logging.getLogger(__name__)


class LocalTrainer:
    """TrainerGroup over one PolicyRank in this process."""

    def __init__(self, rank: PolicyRank):
        self.rank = rank

    @property
    def world_size(self) -> int:
        return 1

    def info(self) -> TrainerInfo:
        i = self.rank.info()
        return TrainerInfo(pad_token_id=i["pad_token_id"], total_params=i["total_params"],
                           trainable_params=i["trainable_params"], device=i["device"],
                           torch_threads=i["torch_threads"])

    def logprobs(self, batch: TrainBatch) -> Ready[torch.Tensor]:
        return Ready(self.rank.logprobs(batch))

    def update(self, update: PolicyUpdate) -> Ready[dict[str, float]]:
        return Ready(self.rank.update(update.batch, update.kl_coef, update.seed, update.is_cap))

    def weights(self, version: int) -> WeightUpdate:
        return WeightUpdate(version, None)  # the colocated engine reads the rank's module

    def save(self, ckpt_dir: Path, save_merged: bool) -> Ready[None]:
        return Ready(self.rank.save(str(ckpt_dir), save_merged))

    def load(self, ckpt_dir: Path) -> Ready[None]:
        return Ready(self.rank.load(str(ckpt_dir)))

    def close(self) -> None:
        """Nothing of its own: `LocalEngines.close` closes the rank (its backend and runtime)."""


class LocalReference:
    """Reference logprobs inside the rank (its frozen copy, or with LoRA the base with adapters off)."""

    def __init__(self, rank: PolicyRank):
        self.rank = rank

    def ref_logprobs(self, batch: TrainBatch) -> Ready[torch.Tensor]:
        return Ready(self.rank.colocated_ref_logprobs(batch))


class LocalCritic:
    """The critic inside the rank."""

    def __init__(self, rank: PolicyRank):
        self.rank = rank

    def values(self, batch: TrainBatch) -> Ready[torch.Tensor]:
        return Ready(self.rank.colocated_critic("values", batch))

    def update(self, batch: TrainBatch, seed: int) -> Ready[dict[str, float]]:
        return Ready(self.rank.colocated_critic("update", batch, seed))

    def save(self, ckpt_dir: Path) -> Ready[None]:
        return Ready(self.rank.colocated_critic("save", str(ckpt_dir)))

    def load(self, ckpt_dir: Path) -> Ready[None]:
        return Ready(self.rank.colocated_critic("load", str(ckpt_dir)))


class LocalEngines:
    """RolloutEngines over the rank's colocated backend."""

    def __init__(self, rank: PolicyRank):
        self.rank = rank

    @property
    def version(self) -> int:
        return self.rank.engine_version

    def rollout(self, job: RolloutJob) -> list[Trajectory]:
        return self.rank.rollout(list(job.tasks), job.n, job.seeds(), job.temperature)

    def sync_weights(self, update: WeightUpdate) -> dict[str, float]:
        t0 = time.perf_counter()
        out = self.rank.sync_engine(update.version)
        out["sync/version"] = float(update.version)
        out.setdefault("sync/seconds", time.perf_counter() - t0)
        return out

    def sleep(self) -> None:
        self.rank.engine_sleep()

    def wake(self) -> None:
        self.rank.engine_wake()

    def close(self) -> None:
        self.rank.close()


def local_context(cfg: Any, plugins: Sequence[object] = (), *, model_path: str | None = None) -> Any:
    """A StepContext over one in-process PolicyRank with its colocated engine (see the module docstring).

    Reads the tasks (data.train_file), rewards, estimator and KL controller from `cfg` as `toolrl train` does.
    With trainer.fsdp.enabled on CUDA the rank is sharded in a one-process group.
    """
    from toolrl import models, runtime
    from toolrl import plugins as registry
    from toolrl.algorithms.advantages import uses_critic
    from toolrl.algorithms.kl import make_kl_controller
    from toolrl.rewards import prepare_rewards
    from toolrl.trainer.sampler import TaskSampler
    from toolrl.trainer.step import StepContext
    from toolrl.types import load_tasks

    runtime.register_plugins(list(plugins))
    alg = cfg.algorithm
    path = model_path or str(models.resolve(cfg.model.name_or_path))
    estimator = registry.registry("advantage_estimators").get(alg.advantage)
    needs_reference, needs_critic = alg.kl_coef > 0, uses_critic(estimator)
    rank = PolicyRank(cfg.model_dump(mode="json"), path, threads=cfg.ray.torch_threads, with_engine=True,
                      colocate_reference=needs_reference and not cfg.model.lora.rank, colocate_critic=needs_critic)
    if rank.fsdp:
        from toolrl.trainer.fsdp import single_process_group

        single_process_group("nccl")
        rank.init_group("127.0.0.1", 0, "nccl")
        rank.sync_engine(0)
    tasks = load_tasks(cfg.data.train_file)
    return StepContext(
        cfg=cfg, tasks=tasks,
        sampler=TaskSampler(len(tasks), cfg.data.prompts_per_step, cfg.data.shuffle, cfg.trainer.seed),
        rewards=prepare_rewards(cfg.rewards), estimator=estimator,
        kl_ctl=make_kl_controller(alg.kl_controller, alg.kl_coef, alg.target_kl, alg.kl_horizon),
        trainer=LocalTrainer(rank), reference=LocalReference(rank) if needs_reference else None,
        critic=LocalCritic(rank) if needs_critic else None, engines=LocalEngines(rank),
        pad_token_id=int(rank.info()["pad_token_id"]))
