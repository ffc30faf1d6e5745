"""Rollout engines of their own (`rollout.placement: separate`): M engine actors, one backend each.

    SeparateEngines(cfg, model_path, placement=...)      implements roles.RolloutEngines

    driver                             engine actors (rollout.replicas = M, each on ray.engine resources)
    ------                             -------------
    rollout(RolloutJob)          ->    the job's tasks split into M contiguous shares (all n samples of a
                                       task on one replica); each replica runs the agent loop with its own
                                       backend, tokenizer and runtime; results come back task-major
    sync_weights(WeightUpdate)   ->    every replica gets the same object ref (the trainer put the state
                                       dict in Ray's object store once) and loads it; versioned
    sleep() / wake()             ->    passed to backends that have them (vLLM / SGLang free memory)

Every trajectory carries the weight version its replica held when it sampled it.

Faults: when a replica's process dies (killed, out of memory, its node gone), it is
re-created on the same bundle of the engines' placement group, given the current
weights, and its share of the job is issued again; the step goes on. A replica
that dies more than `MAX_RESTARTS` times in one call fails the step with an error saying so.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from toolrl.errors import ToolrlError
from toolrl.trainer.cluster import Placement, actor_options, ray_get
from toolrl.trainer.roles import RolloutJob, WeightUpdate
from toolrl.types import Trajectory

logger = logging.getLogger(__name__)

MAX_RESTARTS = 3  # per replica and call


def _dead_errors() -> tuple[type[BaseException], ...]:
    """What a call on a replica whose process died raises (Ray's out-of-memory killer raises its own type)."""
    import ray

    return (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError)


class EngineActor:
    """One rollout engine replica: a RolloutBackend (cfg.rollout.backend) with its own tokenizer and runtime."""

    def __init__(self, config: dict[str, Any], model_path: str, threads: int | None = None,
                 plugins: Sequence[Any] = (), replica: int = 0):
        import torch

        from toolrl import plugins as registry
        from toolrl.config import Config
        from toolrl.rollout.base import BackendSettings
        from toolrl.trainer.modeling import load_tokenizer, pick_device
        from toolrl.trainer.ranks import setup_process

        self.cfg = cfg = Config.model_validate(config)
        setup_process(threads, plugins)
        self.replica = replica
        self.version = 0
        self.device = pick_device(cfg.model.device)
        torch.manual_seed(cfg.trainer.seed)
        self.tokenizer = load_tokenizer(model_path)
        from toolrl.trainer.step import sleep_backend_args, sleeps_during_update

        factory = registry.registry("rollout_backends").get(cfg.rollout.backend)
        sleeps = sleeps_during_update(cfg, str(self.device))  # separate engines: only when asked (=true)
        self.backend = factory(BackendSettings(
            model_path=str(model_path), dtype=cfg.model.dtype, device=str(self.device),
            max_batch_size=cfg.rollout.max_batch_size, tokenizer=self.tokenizer, seed=cfg.trainer.seed,
            extra={**(sleep_backend_args(cfg.rollout.backend) if sleeps else {}), **cfg.rollout.backend_args},
        ))

    def ready(self) -> dict[str, Any]:
        import ray

        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(), "replica": self.replica}

    def rollout(self, tasks: list[Any], n: int, seed: int | list[int], temperature: float | None
                ) -> list[Trajectory]:
        import torch

        from toolrl.trainer.oom import oom_hint
        from toolrl.trainer.rollout import run_rollouts

        if temperature is None:
            torch.manual_seed(seed if isinstance(seed, int) else seed[0])  # one seed per task: the first
        with oom_hint("rollout" if temperature is None else "evaluation rollout"):
            return run_rollouts(self.backend, self.tokenizer, tasks, n, self.cfg, seed=seed, temperature=temperature,
                                weight_version=self.version)

    def load_weights(self, version: int, state: dict[str, Any]) -> dict[str, float]:
        """Load `state` (resolved by Ray from the trainer's object ref) into the backend; returns its size."""
        t0 = time.perf_counter()
        self.backend.update_weights(state)
        self.version = version
        nbytes = sum(int(t.numel()) * int(t.element_size()) for t in state.values() if hasattr(t, "numel"))
        return {"seconds": time.perf_counter() - t0, "bytes": float(nbytes)}

    def sleep(self) -> None:
        if hasattr(self.backend, "sleep"):
            self.backend.sleep()

    def wake(self) -> None:
        if hasattr(self.backend, "wake"):
            self.backend.wake()

    def stats(self) -> dict[str, float]:
        return dict(self.backend.stats()) if hasattr(self.backend, "stats") else {}

    def close(self) -> None:
        from toolrl import runtime

        runtime.close()
        self.backend.close()


def split_tasks(n_tasks: int, replicas: int) -> list[range]:
    """Contiguous shares of task indices, as even as possible; a task (and its n samples) stays on one replica."""
    k = min(replicas, n_tasks)
    base, extra = divmod(n_tasks, k) if k else (0, 0)
    out, start = [], 0
    for i in range(k):
        size = base + (1 if i < extra else 0)
        out.append(range(start, start + size))
        start += size
    return out


def share_args(job: RolloutJob, replicas: int) -> list[tuple[list[Any], int, int | list[int], float | None]]:
    """`EngineActor.rollout`'s arguments for each replica's contiguous share of the job (its tasks and, for a
    job of several steps, their seeds)."""
    seeds = job.seeds()
    return [([job.tasks[i] for i in share], job.n, seeds if isinstance(seeds, int) else [seeds[i] for i in share],
             job.temperature) for share in split_tasks(len(job.tasks), replicas)]


class SeparateEngines:
    """RolloutEngines over `cfg.rollout.replicas` EngineActor replicas (see the module docstring)."""

    def __init__(self, cfg: Any, model_path: str, *, placement: Placement | None = None,
                 plugins: Sequence[Any] = ()):
        self.cfg = cfg
        self.model_path = model_path
        self.placement = placement
        self.plugins = list(plugins)
        self._config = cfg.model_dump(mode="json")
        self._version = 0
        self._state: Any = None  # the object ref of the current weights (None: the model_path weights, version 0)
        self.restarts = 0
        self.replicas = cfg.rollout.replicas
        self.actors: list[Any] = [self._spawn(i) for i in range(self.replicas)]
        self.info: list[dict[str, Any]] = [{} for _ in range(self.replicas)]
        # model-loading errors surface here; a replica killed while loading (e.g. by Ray's OOM killer) is retried
        facts = self._all("ready", [()] * self.replicas)
        self.info = list(facts)
        for f in facts:
            logger.info("engine replica %d: pid %d on node %s", f["replica"], f["pid"], f["node_id"][:12])

    # -- actors ------------------------------------------------------------------------------------
    def _spawn(self, replica: int) -> Any:
        import ray

        res = self.cfg.ray.engine
        if self.placement is not None and self.placement.engine_pg is not None:
            opts = actor_options(self.placement.engine_pg, replica, res.num_cpus, res.num_gpus, res.resources)
        else:
            opts = {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus}
            if res.resources:
                opts["resources"] = dict(res.resources)
        threads = self.cfg.ray.torch_threads or (max(1, int(res.num_cpus)) if res.num_cpus >= 1 else 1)
        return ray.remote(EngineActor).options(max_concurrency=1, **opts).remote(
            self._config, self.model_path, threads, self.plugins, replica)

    def _restart(self, replica: int, exc: BaseException) -> None:
        """Re-create a dead replica on its bundle (`_call` then gives it the current weights)."""
        import ray

        self.restarts += 1
        logger.warning("engine replica %d died (%s); re-creating it with weight version %d", replica,
                       type(exc).__name__, self._version)
        try:
            ray.kill(self.actors[replica])
        except Exception:  # noqa: BLE001 - it is already gone
            logger.debug("ray.kill of the dead replica failed", exc_info=True)
        self.actors[replica] = self._spawn(replica)

    def _call(self, replica: int, method: str, *args: Any, restarted: bool = False) -> Any:
        """`actor.method(*args)` on a replica; when its process has died, re-create it, load the current
        weights into it and call again (MAX_RESTARTS times at most)."""
        for attempt in range(int(restarted), MAX_RESTARTS + 2):
            try:
                actor = self.actors[replica]
                if attempt:  # a new process: wait for it to load, and catch it up on the weights
                    self.info[replica] = ray_get(actor.ready.remote())
                    if self._state is not None and method != "load_weights":
                        ray_get(actor.load_weights.remote(self._version, self._state))
                return ray_get(getattr(actor, method).remote(*args))
            except _dead_errors() as exc:
                if attempt > MAX_RESTARTS:
                    raise ToolrlError(
                        f"rollout engine replica {replica} died {attempt + 1} times in one {method} call "
                        f"(last: {type(exc).__name__})", where="rollout.placement=separate, ray.engine",
                        fix="read the engine's log (Ray prints it above, or `ray logs`); it may run out of memory: "
                            "lower rollout.max_batch_size or give it more (ray.engine.*), then resume with "
                            "trainer.resume=auto") from exc
                self._restart(replica, exc)
        raise AssertionError("unreachable")

    def _all(self, method: str, args_per_replica: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Issue a call to several replicas at once; a replica that dies is re-created and its call issued again."""
        refs = [getattr(self.actors[i], method).remote(*args) for i, args in enumerate(args_per_replica)]
        out: list[Any] = []
        for i, ref in enumerate(refs):
            try:
                out.append(ray_get(ref))
            except _dead_errors() as exc:
                self._restart(i, exc)
                out.append(self._call(i, method, *args_per_replica[i], restarted=True))
        return out

    # -- RolloutEngines ----------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._version

    def rollout(self, job: RolloutJob) -> list[Trajectory]:
        parts = self._all("rollout", share_args(job, self.replicas))
        return [t for part in parts for t in part]  # shares are contiguous: task-major order is kept

    def sync_weights(self, update: WeightUpdate) -> dict[str, float]:
        if update.state is None:
            raise ToolrlError("separate rollout engines need the weights in Ray's object store, got none",
                              where="rollout.placement=separate",
                              fix="this is a bug in toolrl's trainer group (TrainerGroup.weights); please report it")
        t0 = time.perf_counter()
        self._state, self._version = update.state, update.version  # a replica restarted from now on loads these
        per = self._all("load_weights", [(update.version, update.state)] * self.replicas)
        return {
            "sync/seconds": time.perf_counter() - t0,
            "sync/load_seconds_max": max(p["seconds"] for p in per),
            "sync/bytes": per[0]["bytes"],
            "sync/version": float(update.version),
            "rollout/replicas": float(self.replicas),
            "rollout/engine_restarts": float(self.restarts),
        }

    def sleep(self) -> None:
        self._all("sleep", [()] * self.replicas)

    def wake(self) -> None:
        self._all("wake", [()] * self.replicas)

    def close(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.get(a.close.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - closing is best effort; the actor is killed next
                logger.debug("closing an engine replica failed", exc_info=True)
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001
                logger.debug("ray.kill of an engine replica failed", exc_info=True)
