"""Ray plumbing: start or join Ray, check resources, place the workers as actors.

With no `ray.address` a local Ray instance starts (no dashboard; the 2-core
laptop case), and it stops when training ends. With an address (`auto`, or
`ray://host:10001`, or `host:6379`) the trainer joins that cluster and leaves
it running. Resources per worker come from `ray.policy/reference/critic`
(`num_cpus`, `num_gpus`); a request the cluster cannot satisfy is an error
before any actor starts (Ray would otherwise wait forever).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from toolrl.errors import ToolrlError, require

logger = logging.getLogger(__name__)


@dataclass
class Workers:
    """Actor handles. `reference` / `critic` may be the policy actor itself (colocated) or None."""

    policy: Any
    reference: Any | None
    critic: Any | None
    actors: list[Any]
    pids: dict[str, int]


def start_ray(cfg: Any) -> bool:
    """Start or join Ray; returns True when this call started a local instance (to stop at the end)."""
    ray = require("ray", "ray", "training (the trainer runs its workers as Ray actors)")
    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in ("TOOLRL_NO_ENTRYPOINTS", "TOOLRL_CACHE", "TOOLRL_TRACE_PLUGINS")
           if k in os.environ}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # idle OpenMP threads sleep instead of spinning: on a CPU shared with other work, spinning threads
    # made generation 5-20x slower (measured on the 2-core machine); set it yourself to override
    env["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
    runtime_env = {"env_vars": env}
    if cfg.ray.address:
        try:
            ray.init(address=cfg.ray.address, runtime_env=runtime_env, log_to_driver=True)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is reported the same way
            raise ToolrlError(f"could not join the Ray cluster at {cfg.ray.address!r}: {exc}", where="ray.address",
                              fix="start the cluster (`ray start --head`) and pass its address, e.g. "
                                  "ray.address=auto, or leave ray.address unset to start a local instance") from None
        return False
    ray.init(num_cpus=cfg.ray.num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=True,
             runtime_env=runtime_env)
    return True


def stop_ray(started: bool) -> None:
    import ray

    if started and ray.is_initialized():
        ray.shutdown()


def placement(cfg: Any, needs_reference: bool, needs_critic: bool) -> tuple[str | None, str | None]:
    """Where the reference and critic live: 'actor', 'policy' (inside the policy actor) or None."""
    lora = bool(cfg.model.lora.rank)
    if not needs_reference:
        ref = None
    elif lora:
        ref = "policy"  # base model with adapters disabled: no copy
    else:
        ref = "policy" if cfg.ray.colocate else "actor"
    critic = None if not needs_critic else ("policy" if cfg.ray.colocate else "actor")
    return ref, critic


def check_resources(cfg: Any, ref: str | None, critic: str | None) -> None:
    import ray

    want = {"CPU": cfg.ray.policy.num_cpus, "GPU": cfg.ray.policy.num_gpus}
    keys = ["ray.policy"]
    if ref == "actor":
        want["CPU"] += cfg.ray.reference.num_cpus
        want["GPU"] += cfg.ray.reference.num_gpus
        keys.append("ray.reference")
    if critic == "actor":
        want["CPU"] += cfg.ray.critic.num_cpus
        want["GPU"] += cfg.ray.critic.num_gpus
        keys.append("ray.critic")
    have = ray.cluster_resources()
    for res, amount in want.items():
        if amount > have.get(res, 0) + 1e-9:
            names = ", ".join(f"{k}.num_{res.lower()}s" for k in keys)
            raise ToolrlError(
                f"the workers ask for {amount:g} {res}(s) in total but the Ray cluster has {have.get(res, 0):g}",
                where=names,
                fix=(f"lower {names}, or set ray.colocate=true to run the reference and critic inside the "
                     f"policy actor" + (", or give the local instance more: ray.num_cpus=N" if res == "CPU" else "")),
            )


def _threads(res: Any, cfg: Any) -> int | None:
    """Torch CPU threads for a worker: ray.torch_threads, else all cores for CPU-only work.

    The phases of a step run one after another, so on a CPU machine each worker
    may use every core while it is active.
    """
    if cfg.ray.torch_threads:
        return cfg.ray.torch_threads
    if res.num_gpus:
        return max(1, int(res.num_cpus) or 1)
    return os.cpu_count() or 1


def create_workers(cfg: Any, model_path: str, needs_reference: bool, needs_critic: bool) -> Workers:
    import ray

    from toolrl.trainer.workers import CriticWorker, PolicyWorker, ReferenceWorker

    ref_where, critic_where = placement(cfg, needs_reference, needs_critic)
    check_resources(cfg, ref_where, critic_where)
    config = cfg.model_dump(mode="json")
    r = cfg.ray

    def actor(cls: type, res: Any, **kwargs: Any) -> Any:
        return ray.remote(cls).options(num_cpus=res.num_cpus, num_gpus=res.num_gpus, max_concurrency=1).remote(
            config, model_path, _threads(res, cfg), **kwargs)

    policy = actor(PolicyWorker, r.policy, colocate_reference=ref_where == "policy" and not cfg.model.lora.rank,
                   colocate_critic=critic_where == "policy")
    roles = {"policy": policy}
    if ref_where == "actor":
        roles["reference"] = actor(ReferenceWorker, r.reference)
    if critic_where == "actor":
        roles["critic"] = actor(CriticWorker, r.critic)
    ready = ray_get_all([a.ready.remote() for a in roles.values()])  # model-loading errors surface here
    pids = dict(zip(roles, ready))
    reference = roles.get("reference", policy if ref_where == "policy" else None)
    critic = roles.get("critic", policy if critic_where == "policy" else None)
    if ref_where == "policy":
        pids["reference"] = pids["policy"]
    if critic_where == "policy":
        pids["critic"] = pids["policy"]
    actors = list(roles.values())
    return Workers(policy, reference, critic, actors, pids)


def ray_get(*refs: Any) -> Any:
    """`ray.get` that re-raises a worker's ToolrlError as itself (its message says what to fix).

    One ref gives its value; several give a list.
    """
    out = ray_get_all(refs)
    return out[0] if len(refs) == 1 else out


def ray_get_all(refs: Any) -> list[Any]:
    import ray

    try:
        return ray.get(list(refs))
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ToolrlError):
            raise cause from None
        raise


def kill_workers(workers: Workers | None) -> None:
    import ray

    if workers is None:
        return
    try:
        ray_get(workers.policy.close.remote())
    except Exception:
        logger.debug("closing the policy worker failed", exc_info=True)
    for a in workers.actors:
        try:
            ray.kill(a)
        except Exception:
            logger.debug("ray.kill(%r) failed", a, exc_info=True)
