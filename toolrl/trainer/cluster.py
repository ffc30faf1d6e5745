"""Ray plumbing: start or join Ray (safely), reserve placement groups, `ray_get` that re-raises a worker's error.

The actors themselves are started by `toolrl.trainer.group.start_roles` (trainer
ranks, reference, critic) and `toolrl.trainer.engines.SeparateEngines`.

Local instance (no `ray.address`): Ray runs on loopback only. Its node address
is 127.0.0.1, so the GCS, the raylet and object manager, the metrics, dashboard
and runtime-env agents and every worker listen on 127.0.0.1 and nothing on the
machine's network addresses (Ray by default listens on all interfaces and,
before 2.59, without authentication). The dashboard is off unless
`ray.dashboard=true`, and then on 127.0.0.1. The instance stops when training ends.

Joining (`ray.address`: `auto`, `host:6379`, `ray://host:10001`): the trainer
joins that cluster and leaves it running; an address on loopback is kept on
loopback. `ray.auth` chooses Ray's token authentication (docs/scaling.md,
"Security").

Placement: the trainer's actors (ranks, reference, critic) are one placement
group of PACKed bundles, the engine replicas another of SPREAD bundles
(`make_placement`, `actor_options`). A request the cluster cannot satisfy is an
error naming the config keys before any actor starts (Ray would otherwise wait
forever).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from toolrl.errors import ToolrlError, require

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Ray reads this (at import, and in every process it starts): with clusters "disabled" a node's address is
# 127.0.0.1 and Ray's servers bind to it instead of to every interface. toolrl sets it for the processes of a
# local instance (and of a cluster whose address is on loopback), and restores it when Ray stops.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")
# an all-zero bundle is not allowed by Ray; an actor asking for nothing (num_cpus=0: it shares the cores)
# reserves this much memory instead, which keeps it in its bundle without taking CPU from anyone
MIN_MEMORY = 1 << 20

_saved_env: dict[str, str | None] = {}
_saved_cluster_flag: bool | None = None
_joined = False  # this module connected the driver to a cluster (disconnected again by stop_ray)


# ----------------------------------------------------------------------------------------------
# Start / join / stop
# ----------------------------------------------------------------------------------------------


def start_ray(cfg: Any) -> bool:
    """Start or join Ray; returns True when this call started a local instance (to stop at the end).

    A joined cluster keeps running after `stop_ray`, which only disconnects from it. When Ray is already
    initialised in this process (by the caller), it is used as it is and left alone.
    """
    global _joined
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
    rc = cfg.ray
    _set_auth_env(rc)
    if rc.address:
        try:
            _check_reachable(rc.address)
        except ToolrlError:
            _restore_env()
            raise
        if is_loopback_address(rc.address):
            _enter_loopback_mode()
        try:
            ray.init(address=rc.address, runtime_env=runtime_env, log_to_driver=True)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is reported the same way
            _restore_env()
            raise ToolrlError(f"could not join the Ray cluster at {rc.address!r}: {exc}", where="ray.address",
                              fix="start the cluster (`ray start --head`, docs/scaling.md) and pass its address, e.g. "
                                  "ray.address=auto; a cluster with token authentication also needs its token "
                                  "(ray.auth_token_file or RAY_AUTH_TOKEN); or leave ray.address unset to start a "
                                  "local instance") from None
        _joined = True
        return False
    _enter_loopback_mode()
    try:
        ray.init(num_cpus=rc.num_cpus or os.cpu_count() or 1, _node_ip_address=LOOPBACK,
                 include_dashboard=bool(rc.dashboard), dashboard_host=LOOPBACK, log_to_driver=True,
                 runtime_env=runtime_env)
    except Exception:
        _restore_env()
        raise
    if rc.dashboard:
        logger.info("Ray dashboard on http://%s (loopback only)", _dashboard_url(ray) or f"{LOOPBACK}:8265")
    return True


def stop_ray(started: bool) -> None:
    """Stop the local instance `start_ray` started, or disconnect from the cluster it joined."""
    global _joined
    import ray

    if (started or _joined) and ray.is_initialized():
        ray.shutdown()
    _joined = False
    if not ray.is_initialized():
        _restore_env()


def is_loopback_address(address: str) -> bool:
    """`127.0.0.1:6379`, `localhost:6379`, `ray://127.0.0.1:10001`, `[::1]:6379` -> True; `auto` -> the address
    of the cluster this machine last started (from Ray's address file), else False."""
    addr = address.strip()
    if addr == "auto":
        addr = _current_cluster_address() or ""
    if "://" in addr:
        addr = addr.split("://", 1)[1]
    host = addr.rsplit(":", 1)[0].strip("[]") if ":" in addr.strip("[]") or addr.startswith("[") else addr
    return host == "localhost" or host == "::1" or host.startswith("127.")


def _check_reachable(address: str) -> None:
    """A `host:port` address must accept a connection (Ray itself would retry for minutes)."""
    import socket

    addr = address.strip()
    if addr == "auto" or "://" in addr or ":" not in addr:
        return
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=10):
            pass
    except (OSError, ValueError) as exc:
        raise ToolrlError(f"nothing answers at the Ray address {address!r} ({exc})", where="ray.address",
                          fix="start the cluster's head (`ray start --head --port=PORT`, docs/scaling.md) and pass "
                              "host:PORT, or ray.address=auto on a machine of the cluster, or leave ray.address "
                              "unset to start a local instance") from None


def _current_cluster_address() -> str | None:
    try:
        from ray._private.services import find_gcs_addresses

        found = list(find_gcs_addresses())
        return found[0] if len(found) == 1 else None
    except Exception:  # noqa: BLE001 - an older Ray or no cluster: not on loopback as far as we know
        return None


def _dashboard_url(ray: Any) -> str | None:
    try:
        return ray._private.worker.get_dashboard_url()
    except Exception:  # noqa: BLE001
        return None


def _save_env(key: str) -> None:
    if key not in _saved_env:
        _saved_env[key] = os.environ.get(key)


def _enter_loopback_mode() -> None:
    """Make this process and the Ray processes it starts use 127.0.0.1 as the node address."""
    global _saved_cluster_flag
    _save_env(_LOOPBACK_ENV)
    os.environ[_LOOPBACK_ENV] = "0"
    try:
        from ray._private import ray_constants

        if _saved_cluster_flag is None:
            _saved_cluster_flag = ray_constants.ENABLE_RAY_CLUSTER
        ray_constants.ENABLE_RAY_CLUSTER = False  # read at import; this driver imported Ray before
    except (ImportError, AttributeError):
        logger.warning("this Ray version has no ENABLE_RAY_CLUSTER switch; its servers may listen on every "
                       "interface (check with `ss -ltnp`)")


def _set_auth_env(rc: Any) -> None:
    """ray.auth / ray.auth_token_file -> Ray's RAY_AUTH_MODE / RAY_AUTH_TOKEN_PATH (restored at stop_ray)."""
    if rc.auth == "auto" and not rc.auth_token_file:
        if has_token_auth():
            _refresh_ray_config()  # RAY_AUTH_* as the environment says now (a caller may have set them late)
        return
    if not has_token_auth():
        if rc.auth == "token" or rc.auth_token_file:
            raise ToolrlError(f"the installed Ray {_ray_version()} has no token authentication (Ray >= 2.52 has)",
                              where="ray.auth", fix="pip install -U 'ray>=2.52', or set ray.auth=auto")
        return
    if rc.auth_token_file:
        path = os.path.expanduser(rc.auth_token_file)
        if not os.path.isfile(path) or not open(path, encoding="utf-8").read().strip():
            raise ToolrlError(f"the Ray auth token file {path} does not exist or is empty", where="ray.auth_token_file",
                              fix="copy the head node's token there (`ray get-auth-token` on the head prints it), "
                                  "or set RAY_AUTH_TOKEN")
        _save_env("RAY_AUTH_TOKEN_PATH")
        os.environ["RAY_AUTH_TOKEN_PATH"] = path
    if rc.auth != "auto":
        _save_env("RAY_AUTH_MODE")
        os.environ["RAY_AUTH_MODE"] = rc.auth
    elif rc.auth_token_file:
        _save_env("RAY_AUTH_MODE")
        os.environ["RAY_AUTH_MODE"] = "token"
    _refresh_ray_config()


def _refresh_ray_config() -> None:
    """Ray's C++ config caches RAY_AUTH_MODE when Ray is imported; re-read it (what `ray.init` itself does)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):
        logger.debug("no Ray config to refresh", exc_info=True)


def _restore_env() -> None:
    global _saved_cluster_flag
    for key, value in _saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    changed_auth = any(k in _saved_env for k in _AUTH_ENV)
    _saved_env.clear()
    if _saved_cluster_flag is not None:
        with contextlib.suppress(ImportError, AttributeError):
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = _saved_cluster_flag
        _saved_cluster_flag = None
    if changed_auth:
        _refresh_ray_config()


def has_token_auth() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("ray._private.authentication") is not None
    except (ImportError, ValueError):
        return False


def auth_mode() -> str:
    """'token' or 'disabled': what this process's Ray uses now."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled

        return "token" if is_token_auth_enabled() else "disabled"
    except ImportError:
        return "disabled"


def _ray_version() -> str:
    try:
        import ray

        return str(ray.__version__)
    except ImportError:
        return "(not installed)"


# ----------------------------------------------------------------------------------------------
# Placement groups
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """The run's placement groups: the trainer's bundles PACKed, the engines' SPREAD (None: no separate engines)."""

    trainer_pg: Any
    engine_pg: Any | None

    def remove(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for pg in (self.trainer_pg, self.engine_pg):
            if pg is not None:
                with contextlib.suppress(Exception):
                    remove_placement_group(pg)


def bundle(res: Any) -> dict[str, float]:
    """The Ray resource dict of one actor with `WorkerResources` `res` (never all zero: see MIN_MEMORY)."""
    out = {"CPU": float(res.num_cpus), "GPU": float(res.num_gpus), **{k: float(v) for k, v in res.resources.items()}}
    return _nonzero(out)


def actor_options(pg: Any, bundle_index: int, num_cpus: float, num_gpus: float,
                  resources: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Keyword arguments for `ray.remote(cls).options(...)`: the actor takes bundle `bundle_index` of `pg`.

    Pass the same amounts the bundle was made with (`bundle(res)`); an actor asking for nothing reserves
    MIN_MEMORY, as its bundle does.
    """
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    custom = {k: float(v) for k, v in (resources or {}).items() if v > 0}
    opts: dict[str, Any] = {
        "num_cpus": num_cpus, "num_gpus": num_gpus,
        "scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group=pg, placement_group_bundle_index=bundle_index,
            placement_group_capture_child_tasks=True),
    }
    if custom:
        opts["resources"] = custom
    if not num_cpus and not num_gpus and not custom:
        opts["memory"] = MIN_MEMORY
    return opts


def resource_keys(cfg: Any, resource: str, *, engines: bool) -> list[str]:
    """The config keys that ask for `resource` ('CPU', 'GPU' or a custom name)."""
    roles = ["ray.policy", "ray.reference", "ray.critic"] + (["ray.engine"] if engines else [])
    out = []
    for key in roles:
        res = getattr(cfg.ray, key.split(".")[1])
        if resource == "CPU":
            out.append(f"{key}.num_cpus")
        elif resource == "GPU":
            if res.num_gpus:
                out.append(f"{key}.num_gpus")
        elif resource in res.resources:
            out.append(f"{key}.resources.{resource}")
    return out


def make_placement(cfg: Any, *, trainer_bundles: list[dict[str, float]],
                   engine_bundles: list[dict[str, float]]) -> Placement:
    """Reserve the trainer's bundles (PACK: as few nodes as possible) and the engines' (SPREAD: across nodes).

    Fails before any actor starts, naming the config keys, when the cluster lacks the resources in total, when
    one bundle fits on no node, or when the reservation does not complete within ray.placement_timeout seconds.
    """
    from ray.util.placement_group import placement_group

    trainer_bundles = [_nonzero(b) for b in trainer_bundles]
    engine_bundles = [_nonzero(b) for b in engine_bundles]
    check_fits(cfg, trainer_bundles, engine_bundles)
    trainer_pg = placement_group(trainer_bundles, strategy="PACK")
    engine_pg = placement_group(engine_bundles, strategy="SPREAD") if engine_bundles else None
    placement = Placement(trainer_pg, engine_pg)
    timeout = float(cfg.ray.placement_timeout)
    for name, pg, bundles in (("trainer", trainer_pg, trainer_bundles), ("engine", engine_pg, engine_bundles)):
        if pg is None:
            continue
        if not _wait_ready(pg, timeout):
            placement.remove()
            keys = sorted({k for b in bundles for r in b for k in resource_keys(cfg, r, engines=name == "engine")})
            raise ToolrlError(
                f"the Ray cluster did not reserve the {name} placement group {bundles} within {timeout:g} s; "
                f"free now: {_fmt(available_resources())}, per node: {_fmt_nodes()}",
                where=", ".join(keys) or "ray",
                fix="other jobs may hold the resources (see `ray status`): wait for them, lower these keys, or raise "
                    "ray.placement_timeout")
    return placement


def _nonzero(b: Mapping[str, float]) -> dict[str, float]:
    out = {k: float(v) for k, v in b.items() if v and v > 0}
    return out or {"memory": float(MIN_MEMORY)}


def _wait_ready(pg: Any, timeout: float) -> bool:
    import ray

    ready, _ = ray.wait([pg.ready()], timeout=timeout)
    return bool(ready)


def check_fits(cfg: Any, trainer_bundles: Sequence[Mapping[str, float]],
               engine_bundles: Sequence[Mapping[str, float]]) -> None:
    """Every bundle must fit on one node, and all of them on the cluster; errors name the keys that ask."""
    import ray

    have = ray.cluster_resources()
    want: dict[str, float] = {}
    for b in [*trainer_bundles, *engine_bundles]:
        for res, amount in b.items():
            want[res] = want.get(res, 0.0) + amount
    engines = bool(engine_bundles)
    for res, amount in sorted(want.items()):
        if amount > have.get(res, 0.0) + 1e-9:
            keys = resource_keys(cfg, res, engines=engines)
            counts = f"{cfg.trainer.data_parallel} trainer rank(s)" + (
                f", {cfg.rollout.replicas} engine replica(s)" if engines else "")
            raise ToolrlError(
                f"the run asks for {amount:g} {res} in total ({counts}) but the Ray cluster has {have.get(res, 0):g}",
                where=", ".join(keys + ["trainer.data_parallel"] + (["rollout.replicas"] if engines else [])),
                fix=_fit_fix(res, keys))
    nodes = node_resources()
    for role, bundles in (("trainer", trainer_bundles), ("engine", engine_bundles)):
        for b in bundles:
            if nodes and not any(all(n.get(r, 0.0) + 1e-9 >= a for r, a in b.items()) for n in nodes.values()):
                keys = sorted({k for r in b for k in resource_keys(cfg, r, engines=role == "engine")})
                raise ToolrlError(
                    f"one {role} actor asks for {_fmt(b)}, which no single node of the cluster has "
                    f"(nodes: {_fmt_nodes()})", where=", ".join(keys),
                    fix="lower these keys so that one actor fits on one node, or add a node that has them")


def _fit_fix(res: str, keys: list[str]) -> str:
    names = ", ".join(keys) or "the ray.* resources"
    if res == "CPU":
        return (f"lower {names}, trainer.data_parallel or rollout.replicas, set ray.colocate=true to run the "
                "reference and critic inside the policy ranks, or give the local instance more: ray.num_cpus=N")
    if res == "GPU":
        return f"lower {names}, or run on a cluster with more GPUs"
    return (f"start nodes that offer '{res}' (`ray start ... --resources='{{\"{res}\": N}}'`), or remove it from "
            f"{names}")


def available_resources() -> dict[str, float]:
    import ray

    return dict(ray.available_resources())


def node_resources() -> dict[str, dict[str, float]]:
    """Total resources of each live node, by node id."""
    import ray

    return {n["NodeID"]: dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")}


def cluster_nodes() -> list[dict[str, Any]]:
    """The live nodes: id, address, head or not, total and free resources (for `toolrl doctor`)."""
    import ray

    free_by_node: dict[str, dict[str, float]] = {}
    with contextlib.suppress(Exception):
        free_by_node = {k: dict(v) for k, v in ray._private.state.available_resources_per_node().items()}
    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = {k: v for k, v in n.get("Resources", {}).items() if not k.startswith("node:")}
        out.append({
            "node_id": n["NodeID"], "address": n.get("NodeManagerAddress"), "head": _is_head(n),
            "resources": res, "available": {k: v for k, v in free_by_node.get(n["NodeID"], {}).items()
                                            if not k.startswith("node:")},
        })
    return out


def _is_head(n: Mapping[str, Any]) -> bool:
    return any(k == "node:__internal_head__" for k in n.get("Resources", {})) or bool(n.get("IsHead"))


def _fmt(res: Mapping[str, float]) -> str:
    shown = {k: round(v, 3) for k, v in res.items() if not k.startswith("node:") and "memory" not in k}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(shown.items())) + "}"


def _fmt_nodes() -> str:
    return "; ".join(f"{nid[:8]} {_fmt(res)}" for nid, res in node_resources().items())


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------


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
