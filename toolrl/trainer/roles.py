"""What a training step talks to: the roles, as Protocols, and the payloads between them.

    driver (step.py)                         roles
    ----------------                         -----
    engines.rollout(RolloutJob)          ->  RolloutEngines   (colocated in trainer rank 0, or own actors)
    reference.ref_logprobs(batch)        ->  Reference        (own actors, or colocated in the trainer group)
    critic.values(batch) / .update(...)  ->  Critic           (own actors, or colocated in the trainer group)
    trainer.logprobs(batch) / .update()  ->  TrainerGroup     (N data-parallel policy ranks)
    engines.sync_weights(trainer.weights(version))

Calls that the driver overlaps (reference, critic and old logprobs; the policy
and critic updates) return a `Pending` whose `get()` waits for the result;
rollout and weight sync are blocking. Nothing here imports Ray: the Ray-backed
implementations live in `toolrl.trainer.group` (trainer ranks, reference,
critic, colocation wrappers) and `toolrl.trainer.engines` (separate engines).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from toolrl.types import Task, Trajectory

if TYPE_CHECKING:
    import torch

    from toolrl.trainer.batch import TrainBatch

T_co = TypeVar("T_co", covariant=True)
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Payloads
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutJob:
    """n samples of each task; the output is task-major (all samples of tasks[0], then tasks[1], ...)."""

    tasks: tuple[Task, ...]
    n: int  # samples per task (task-major output order)
    seed: int  # step seed (the agent loop seeds per (seed, task id, sample index))
    temperature: float | None = None  # None = cfg.rollout.temperature (evaluation overrides it)
    task_seeds: tuple[int, ...] = ()  # a step seed per task (one job for several steps' batches); () = `seed`

    def seeds(self) -> int | tuple[int, ...]:
        """What the engines pass on to `run_rollouts`: the one step seed, or one per task."""
        if self.task_seeds and len(self.task_seeds) != len(self.tasks):
            raise ValueError(f"a rollout job of {len(self.tasks)} tasks has {len(self.task_seeds)} task seeds")
        return self.task_seeds or self.seed


@dataclass(frozen=True)
class WeightUpdate:
    """New policy weights for the rollout engines, versioned by the trainer's update count."""

    version: int  # trainer update count; 0 = initial weights
    state: Any  # ray.ObjectRef to a dict[str, Tensor] (CPU), or None when the engine shares the
    # trainer's module or process (colocated): it then takes the weights from the module itself


@dataclass(frozen=True)
class PolicyUpdate:
    """One policy update: ppo_epochs x mini-batches over `batch` (advantages etc. in batch.extras)."""

    batch: TrainBatch
    kl_coef: float  # the KL controller's current coefficient (used when kl_in == "loss")
    seed: int  # step seed: mini-batch shuffling and dropout
    is_cap: float | None = None  # stale batch (async): per-token weights min(exp(old - rollout), is_cap) in the
    # policy loss, where old = the trainer's logprobs before this update (decoupled PPO); None = algorithm.tis_cap


@dataclass(frozen=True)
class TrainerInfo:
    """Facts about the trainer group for the driver and the run's header."""

    pad_token_id: int
    total_params: int
    trainable_params: int
    device: str
    torch_threads: int
    world_size: int = 1
    pids: Mapping[str, int] = field(default_factory=dict)  # "policy" (rank 0), "policy/1", ... -> process id


# ---------------------------------------------------------------------------------------------
# Roles
# ---------------------------------------------------------------------------------------------


class Pending(Protocol[T_co]):
    """A result being computed elsewhere (a Ray call); `get()` waits for it and re-raises its error."""

    def get(self) -> T_co: ...


@dataclass(frozen=True)
class Ready(Generic[T]):
    """An already computed result, for in-process implementations."""

    value: T

    def get(self) -> T:
        return self.value


class RolloutEngines(Protocol):
    """Whatever samples trajectories: the colocated backend in trainer rank 0, or engine actors."""

    @property
    def version(self) -> int: ...  # weight version the engines now hold

    def rollout(self, job: RolloutJob) -> list[Trajectory]: ...
    # task-major; every Trajectory has .weight_version set to the version it was sampled with

    def sync_weights(self, update: WeightUpdate) -> dict[str, float]: ...  # metrics (sync/seconds ...)

    def sleep(self) -> None: ...  # free engine memory (no-op where unsupported)

    def wake(self) -> None: ...

    def close(self) -> None: ...


class TrainerGroup(Protocol):
    """The data-parallel policy: N ranks of one torch.distributed group (N = trainer.data_parallel).

    Every call is issued to all ranks; batch-shaped results come back in the batch's
    order, reductions (loss, gradient norm) are global: N ranks give what 1 rank gives.
    """

    @property
    def world_size(self) -> int: ...

    def info(self) -> TrainerInfo: ...

    def logprobs(self, batch: TrainBatch) -> Pending[torch.Tensor]: ...  # [B, T] log-probs of the current policy

    def update(self, update: PolicyUpdate) -> Pending[dict[str, float]]: ...  # actor/* and loss/* metrics

    def weights(self, version: int) -> WeightUpdate: ...  # the current weights, for RolloutEngines.sync_weights

    def save(self, ckpt_dir: Path, save_merged: bool) -> Pending[None]: ...  # policy/ (an HF folder) + optimizer

    def load(self, ckpt_dir: Path) -> Pending[None]: ...

    def close(self) -> None: ...


class Reference(Protocol):
    """The frozen initial policy (KL term)."""

    def ref_logprobs(self, batch: TrainBatch) -> Pending[torch.Tensor]: ...  # [B, T]


class Critic(Protocol):
    """The value model (PPO)."""

    def values(self, batch: TrainBatch) -> Pending[torch.Tensor]: ...  # [B, T]

    def update(self, batch: TrainBatch, seed: int) -> Pending[dict[str, float]]: ...  # critic/* and loss/value

    def save(self, ckpt_dir: Path) -> Pending[None]: ...  # critic/ in the checkpoint

    def load(self, ckpt_dir: Path) -> Pending[None]: ...
