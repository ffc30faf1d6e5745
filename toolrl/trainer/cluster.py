"""Ray plumbing: start or join Ray; `ray_get` that re-raises a worker's ToolrlError.

The actors themselves are started by `toolrl.trainer.group.start_roles`.

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
from typing import Any

from toolrl.errors import ToolrlError, require

logger = logging.getLogger(__name__)


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
