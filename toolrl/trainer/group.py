"""The driver's side of the roles: Ray actors for the ranks, and the role objects step.py talks to.

    start_roles(cfg, ...) -> Roles(trainer, reference, critic, engines)

    trainer    PolicyGroup          N PolicyRank actors (trainer.data_parallel), one torch.distributed group
    reference  ReferenceGroup       N ReferenceRank actors
               ColocatedReference   inside the policy ranks (ray.colocate, or LoRA: adapters disabled)
    critic     CriticGroup          N CriticRank actors, their own torch.distributed group
               ColocatedCritic      inside the policy ranks (ray.colocate)
    engines    ColocatedEngines     the rollout backend inside policy rank 0 (rollout.placement=colocated)
               engines.SeparateEngines   engine actors of their own (rollout.placement=separate)

Batch-shaped calls (logprobs, reference logprobs, values) are split across a
group's ranks balanced by tokens (prompt groups kept whole) and reassembled in
the batch's order; updates send the whole batch to every rank, which takes its
share of each mini-batch (`toolrl.trainer.optimize`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from toolrl.errors import ToolrlError
from toolrl.trainer.batch import TrainBatch
from toolrl.trainer.cluster import ray_get, ray_get_all
from toolrl.trainer.optimize import rank_shares
from toolrl.trainer.roles import (
    Critic,
    PolicyUpdate,
    Reference,
    RolloutEngines,
    RolloutJob,
    TrainerGroup,
    TrainerInfo,
    WeightUpdate,
)
from toolrl.types import Trajectory

logger = logging.getLogger(__name__)

T = TypeVar("T")
Actor = Any  # a Ray actor handle


class RayPending(Generic[T]):
    """Results of remote calls, combined when asked for (a worker's ToolrlError is re-raised as itself)."""

    def __init__(self, refs: Sequence[Any], combine: Callable[[list[Any]], T]):
        self.refs = list(refs)
        self.combine = combine

    def get(self) -> T:
        return self.combine(ray_get_all(self.refs))


def _first_with_resources(parts: list[dict[str, float]]) -> dict[str, float]:
    """Rank 0's statistics (already reduced over the ranks) plus every rank's resources/* metrics."""
    out = dict(parts[0])
    for p in parts[1:]:
        out.update({k: v for k, v in p.items() if k.startswith("resources/")})
    return out


def _none(_: list[Any]) -> None:
    return None


def split_call(actors: Sequence[Actor], call: Callable[[Actor, TrainBatch], Any], batch: TrainBatch,
               group_size: int) -> RayPending[torch.Tensor]:
    """`call(actor, share)` on each actor's token-balanced share; the `[B, T]` rows come back in batch order."""
    if len(actors) == 1:
        return RayPending([call(actors[0], batch)], lambda parts: parts[0])
    shares = rank_shares(batch, len(actors), group_size)
    used = [(a, idx) for a, idx in zip(actors, shares) if idx]
    refs = [call(a, batch.select(idx)) for a, idx in used]
    B, T = len(batch), batch.response_width

    def combine(parts: list[torch.Tensor]) -> torch.Tensor:
        out = torch.zeros((B, T), dtype=parts[0].dtype)
        for (_, idx), part in zip(used, parts):
            out[torch.as_tensor(idx)] = part
        return out

    return RayPending(refs, combine)


# ----------------------------------------------------------------------------------------------
# Roles
# ----------------------------------------------------------------------------------------------


class PolicyGroup:
    """TrainerGroup over N PolicyRank actors."""

    def __init__(self, ranks: Sequence[Actor], info: TrainerInfo, group_size: int, engines_colocated: bool):
        self.ranks = list(ranks)
        self._info = info
        self.group_size = group_size
        self.engines_colocated = engines_colocated

    @property
    def world_size(self) -> int:
        return len(self.ranks)

    def info(self) -> TrainerInfo:
        return self._info

    def logprobs(self, batch: TrainBatch) -> RayPending[torch.Tensor]:
        return split_call(self.ranks, lambda r, b: r.logprobs.remote(b), batch, self.group_size)

    def update(self, update: PolicyUpdate) -> RayPending[dict[str, float]]:
        import ray

        ref = ray.put(update.batch)
        return RayPending([r.update.remote(ref, update.kl_coef, update.seed, update.is_cap) for r in self.ranks],
                          _first_with_resources)

    def weights(self, version: int) -> WeightUpdate:
        if self.engines_colocated:
            return WeightUpdate(version, None)  # rank 0's engine reads its own module
        refs = [r.engine_state.remote() for r in self.ranks]  # all ranks: FSDP gathers collectively
        ray_get_all(refs[1:])
        return WeightUpdate(version, refs[0])

    def save(self, ckpt_dir: Path, save_merged: bool) -> RayPending[None]:
        return RayPending([r.save.remote(str(ckpt_dir), save_merged) for r in self.ranks], _none)

    def load(self, ckpt_dir: Path) -> RayPending[None]:
        return RayPending([r.load.remote(str(ckpt_dir)) for r in self.ranks], _none)

    def close(self) -> None:
        for r in self.ranks:
            try:
                ray_get(r.close.remote())
            except Exception:
                logger.debug("closing a trainer rank failed", exc_info=True)


class ReferenceGroup:
    """Reference over N ReferenceRank actors."""

    def __init__(self, ranks: Sequence[Actor], group_size: int):
        self.ranks, self.group_size = list(ranks), group_size

    def ref_logprobs(self, batch: TrainBatch) -> RayPending[torch.Tensor]:
        return split_call(self.ranks, lambda r, b: r.ref_logprobs.remote(b), batch, self.group_size)


class ColocatedReference:
    """Reference computed inside the policy ranks: their frozen copy (ray.colocate) or, with LoRA, the base."""

    def __init__(self, trainer: PolicyGroup):
        self.trainer = trainer

    def ref_logprobs(self, batch: TrainBatch) -> RayPending[torch.Tensor]:
        return split_call(self.trainer.ranks, lambda r, b: r.colocated_ref_logprobs.remote(b), batch,
                          self.trainer.group_size)


class CriticGroup:
    """Critic over N CriticRank actors (their own torch.distributed group)."""

    def __init__(self, ranks: Sequence[Actor], group_size: int):
        self.ranks, self.group_size = list(ranks), group_size

    def values(self, batch: TrainBatch) -> RayPending[torch.Tensor]:
        return split_call(self.ranks, lambda r, b: r.values.remote(b), batch, self.group_size)

    def update(self, batch: TrainBatch, seed: int) -> RayPending[dict[str, float]]:
        import ray

        ref = ray.put(batch)
        return RayPending([r.update.remote(ref, seed) for r in self.ranks], _first_with_resources)

    def save(self, ckpt_dir: Path) -> RayPending[None]:
        return RayPending([r.save.remote(str(ckpt_dir)) for r in self.ranks], _none)

    def load(self, ckpt_dir: Path) -> RayPending[None]:
        return RayPending([r.load.remote(str(ckpt_dir)) for r in self.ranks], _none)


class ColocatedCritic:
    """Critic living inside the policy ranks (ray.colocate): same process, the policy group's collectives."""

    def __init__(self, trainer: PolicyGroup):
        self.trainer = trainer

    def _all(self, method: str, *args: Any) -> list[Any]:
        return [r.colocated_critic.remote(method, *args) for r in self.trainer.ranks]

    def values(self, batch: TrainBatch) -> RayPending[torch.Tensor]:
        return split_call(self.trainer.ranks, lambda r, b: r.colocated_critic.remote("values", b), batch,
                          self.trainer.group_size)

    def update(self, batch: TrainBatch, seed: int) -> RayPending[dict[str, float]]:
        import ray

        return RayPending(self._all("update", ray.put(batch), seed), _first_with_resources)

    def save(self, ckpt_dir: Path) -> RayPending[None]:
        return RayPending(self._all("save", str(ckpt_dir)), _none)

    def load(self, ckpt_dir: Path) -> RayPending[None]:
        return RayPending(self._all("load", str(ckpt_dir)), _none)


class ColocatedEngines:
    """RolloutEngines inside trainer rank 0: rollouts are its `rollout` calls; a weight sync is a local copy
    (none at all for the hf backend, which generates with the trainer's live module)."""

    def __init__(self, ranks: Sequence[Actor], shares_module: bool):
        self.ranks = list(ranks)
        self.rank0 = self.ranks[0]
        self.shares_module = shares_module  # the hf backend generates with rank 0's module: nothing to copy
        self._version = 0

    @property
    def version(self) -> int:
        return self._version

    def rollout(self, job: RolloutJob) -> list[Trajectory]:
        return ray_get(self.rank0.rollout.remote(list(job.tasks), job.n, job.seeds(), job.temperature))

    def sync_weights(self, update: WeightUpdate) -> dict[str, float]:
        # a copy gathers the weights, which under FSDP2 every rank must join
        ranks = [self.rank0] if self.shares_module else self.ranks
        metrics = ray_get_all([r.sync_engine.remote(update.version) for r in ranks])[0]
        self._version = update.version
        return metrics

    def sleep(self) -> None:
        ray_get(self.rank0.engine_sleep.remote())

    def wake(self) -> None:
        ray_get(self.rank0.engine_wake.remote())

    def close(self) -> None:
        """Nothing of its own: the engine closes with trainer rank 0."""


# ----------------------------------------------------------------------------------------------
# Start-up
# ----------------------------------------------------------------------------------------------


@dataclass
class Roles:
    """What a run's steps talk to, and the actors behind them (to kill at the end)."""

    trainer: TrainerGroup
    reference: Reference | None
    critic: Critic | None
    engines: RolloutEngines
    pids: dict[str, int] = field(default_factory=dict)
    actors: list[Actor] = field(default_factory=list)
    placement: Any = None  # cluster.Placement: its placement groups are removed at close (a joined cluster keeps running)

    def close(self) -> None:
        import ray

        for closing in (self.engines.close, self.trainer.close):
            try:
                closing()
            except Exception:
                logger.debug("closing a role failed", exc_info=True)
        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:
                logger.debug("ray.kill(%r) failed", a, exc_info=True)
        if self.placement is not None:
            self.placement.remove()


def where_roles_live(cfg: Any, needs_reference: bool, needs_critic: bool) -> tuple[str | None, str | None]:
    """Where the reference and critic live: 'actor' (their own ranks), 'policy' (inside the policy ranks) or None."""
    lora = bool(cfg.model.lora.rank)
    if not needs_reference:
        ref = None
    elif lora:
        ref = "policy"  # base model with adapters disabled: no copy
    else:
        ref = "policy" if cfg.ray.colocate else "actor"
    critic = None if not needs_critic else ("policy" if cfg.ray.colocate else "actor")
    return ref, critic


def engines_placement(cfg: Any) -> str:
    return str(getattr(cfg.rollout, "placement", "colocated"))


def check_resources(cfg: Any, ref: str | None, critic: str | None) -> None:
    """The trainer-side actors must fit the cluster (Ray would otherwise wait forever)."""
    import ray

    n = cfg.trainer.data_parallel
    want = {"CPU": n * cfg.ray.policy.num_cpus, "GPU": n * cfg.ray.policy.num_gpus}
    keys = ["ray.policy"]
    for role, where, key in ((cfg.ray.reference, ref, "ray.reference"), (cfg.ray.critic, critic, "ray.critic")):
        if where == "actor":
            want["CPU"] += n * role.num_cpus
            want["GPU"] += n * role.num_gpus
            keys.append(key)
    have = ray.cluster_resources()
    for res, amount in want.items():
        if amount > have.get(res, 0) + 1e-9:
            names = ", ".join(f"{k}.num_{res.lower()}s" for k in keys)
            raise ToolrlError(
                f"the trainer's actors ask for {amount:g} {res}(s) in total ({n} rank(s) each) but the Ray cluster "
                f"has {have.get(res, 0):g}",
                where=f"{names}, trainer.data_parallel",
                fix=(f"lower {names} or trainer.data_parallel, or set ray.colocate=true to run the reference and "
                     "critic inside the policy ranks" + (", or give the local instance more: ray.num_cpus=N"
                                                         if res == "CPU" else "")),
            )


def torch_threads(res: Any, cfg: Any, ranks: int) -> int | None:
    """Torch CPU threads for an actor: ray.torch_threads, else the cores shared by the ranks for CPU-only work.

    The phases of a step run one after another, so on a CPU machine each role may use every core while it is
    active; the ranks of one group run at the same time and share them.
    """
    if cfg.ray.torch_threads:
        return cfg.ray.torch_threads
    if res.num_gpus:
        return max(1, int(res.num_cpus) or 1)
    return max(1, (os.cpu_count() or 1) // max(ranks, 1))


def _pickle_plugins_by_value(plugins: Sequence[Any]) -> None:
    """Plugins whose code is not installed travel by value, with the local modules that code uses.

    Only a module of an installed distribution (or of the standard library) can be imported by name in every
    worker, on every node. A module the driver can import only through its own path (a script's folder, a
    `sys.path` entry the script added, a test file) would fail there with "No module named ...".
    """
    from ray import cloudpickle

    for mod in local_modules(plugins):
        try:
            cloudpickle.register_pickle_by_value(mod)
        except ValueError:  # not in sys.modules: cloudpickle sends such a module's code by value anyway
            pass


def local_modules(objects: Sequence[Any]) -> list[Any]:
    """The modules, not installed, that define `objects` (instances, classes, functions or modules), and
    those their module namespaces refer to in turn. `__main__` is walked but not listed: cloudpickle always
    sends its code by value."""
    if not objects:
        return []  # the common case: reading every installed distribution's metadata takes ~0.5 s
    import inspect
    import sys
    from importlib.metadata import packages_distributions

    installed = set(packages_distributions()) | set(sys.stdlib_module_names) | {"builtins"}

    def defining_module(obj: Any) -> Any:
        if inspect.ismodule(obj):
            return obj
        if inspect.isclass(obj) or inspect.isfunction(obj):
            return inspect.getmodule(obj)
        return None

    out: list[Any] = []
    seen: set[int] = set()
    stack = [defining_module(o) or inspect.getmodule(type(o)) for o in objects]  # an instance: its class's
    while stack:
        mod = stack.pop()
        if mod is None or id(mod) in seen:
            continue
        seen.add(id(mod))
        if mod.__name__.partition(".")[0] in installed:
            continue
        if mod.__name__ != "__main__":
            out.append(mod)
        stack.extend(defining_module(v) for v in list(vars(mod).values()))
    return out


def _join_group(ranks: Sequence[Actor], backend: str) -> None:
    host, port = ray_get(ranks[0].master_address.remote())
    ray_get_all([r.init_group.remote(host, port, backend) for r in ranks])


def start_roles(cfg: Any, model_path: str, *, needs_reference: bool, needs_critic: bool,
                plugins: Sequence[Any] = ()) -> Roles:
    """Start the trainer group, reference, critic and rollout engines as Ray actors and wire the roles."""
    import ray

    from toolrl.trainer.ranks import CriticRank, PolicyRank, ReferenceRank

    ref_where, critic_where = where_roles_live(cfg, needs_reference, needs_critic)
    check_resources(cfg, ref_where, critic_where)
    placement = engines_placement(cfg)
    n, r = cfg.trainer.data_parallel, cfg.ray
    config = cfg.model_dump(mode="json")
    plugins = list(plugins)
    _pickle_plugins_by_value(plugins)
    # one placement group for the trainer's actors (PACK), one for the engine replicas (SPREAD)
    from toolrl.trainer import cluster

    bundles = [cluster.bundle(r.policy) for _ in range(n)]
    for res, where in ((r.reference, ref_where), (r.critic, critic_where)):
        if where == "actor":
            bundles += [cluster.bundle(res) for _ in range(n)]
    engine_bundles = [cluster.bundle(r.engine) for _ in range(cfg.rollout.replicas)] if placement == "separate" else []
    pg = cluster.make_placement(cfg, trainer_bundles=bundles, engine_bundles=engine_bundles)
    bundle = iter(range(len(bundles)))

    def options(res: Any, concurrency: int = 1) -> dict[str, Any]:
        return {**cluster.actor_options(pg.trainer_pg, next(bundle), res.num_cpus, res.num_gpus, res.resources),
                "max_concurrency": concurrency}

    # asynchronous rollouts on a colocated engine: rank 0 answers the rollout thread's calls (rollout, weight copy)
    # while it trains; its methods take the model lock where they touch the weights
    engine_calls = 2 if placement == "colocated" and cfg.trainer.async_rollouts.max_staleness else 1

    backend = "nccl" if r.policy.num_gpus > 0 else "gloo"
    lora = bool(cfg.model.lora.rank)
    policy = [ray.remote(PolicyRank).options(**options(r.policy, engine_calls if k == 0 else 1)).remote(
        config, model_path, torch_threads(r.policy, cfg, n), plugins, rank=k, world_size=n,
        with_engine=k == 0 and placement == "colocated",
        colocate_reference=ref_where == "policy" and not lora, colocate_critic=critic_where == "policy")
        for k in range(n)]
    roles: dict[str, Actor] = {"policy" if k == 0 else f"policy/{k}": a for k, a in enumerate(policy)}
    references = critics = []
    if ref_where == "actor":
        references = [ray.remote(ReferenceRank).options(**options(r.reference)).remote(
            config, model_path, torch_threads(r.reference, cfg, n), plugins) for _ in range(n)]
        roles.update({"reference" if k == 0 else f"reference/{k}": a for k, a in enumerate(references)})
    if critic_where == "actor":
        critics = [ray.remote(CriticRank).options(**options(r.critic)).remote(
            config, model_path, torch_threads(r.critic, cfg, n), plugins, rank=k, world_size=n) for k in range(n)]
        roles.update({"critic" if k == 0 else f"critic/{k}": a for k, a in enumerate(critics)})
    pids = dict(zip(roles, ray_get_all([a.ready.remote() for a in roles.values()])))  # loading errors surface here
    fsdp = bool(getattr(getattr(cfg.trainer, "fsdp", None), "enabled", False)) and r.policy.num_gpus > 0
    if n > 1 or fsdp:
        _join_group(policy, backend)
    if len(critics) > 1:
        _join_group(critics, "nccl" if r.critic.num_gpus > 0 else "gloo")
    if ref_where == "policy":
        pids["reference"] = pids["policy"]
    if critic_where == "policy":
        pids["critic"] = pids["policy"]
    facts = ray_get(policy[0].info.remote())
    shares_module = bool(facts.pop("engine_shares_module"))
    info = TrainerInfo(world_size=n, pids={k: v for k, v in pids.items() if k.startswith("policy")}, **facts)
    trainer = PolicyGroup(policy, info, cfg.rollout.n, engines_colocated=placement == "colocated")
    reference: Reference | None = (ReferenceGroup(references, cfg.rollout.n) if references else
                                   ColocatedReference(trainer) if ref_where == "policy" else None)
    critic: Critic | None = (CriticGroup(critics, cfg.rollout.n) if critics else
                             ColocatedCritic(trainer) if critic_where == "policy" else None)
    actors = list(roles.values())
    if placement == "colocated":
        engines: RolloutEngines = ColocatedEngines(policy, shares_module)
    else:
        from toolrl.trainer.engines import SeparateEngines  # B's engine actors

        engines = SeparateEngines(cfg, model_path, placement=pg, plugins=plugins)
        pids.update({f"engine/{f['replica']}": f["pid"] for f in engines.info})
    return Roles(trainer, reference, critic, engines, pids, actors, placement=pg)
