"""Talking to the Docker engine: connecting, and the hardened container spec."""

from __future__ import annotations

import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import docker
import docker.errors
from docker.types import LogConfig

from .errors import EngineUnavailableError

log = logging.getLogger(__name__)

LABEL_POOL = "toolrl-sandbox.pool"
LABEL_PID = "toolrl-sandbox.pid"
LABEL_PID_START = "toolrl-sandbox.pid-start"
LABEL_HOST = "toolrl-sandbox.host"
LABEL_MODE = "toolrl-sandbox.mode"
SANDBOX_UID = 10001
WORKDIR = "/sandbox"


def connect(timeout: float = 30.0) -> docker.DockerClient:
    """A Docker client for the environment's engine; raises a clear error if it is down."""
    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except docker.errors.DockerException as exc:
        raise EngineUnavailableError(str(exc)) from exc
    except Exception as exc:  # requests / socket errors surface as various types
        raise EngineUnavailableError(repr(exc)) from exc
    return client


@dataclass(frozen=True)
class Endpoint:
    """Where to open raw (hijacked) HTTP connections to the engine."""

    unix_path: str | None
    host: str | None
    port: int | None
    api_version: str

    @classmethod
    def from_client(cls, client: docker.DockerClient) -> Endpoint:
        version = client.api.api_version
        url = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        parsed = urlparse(url)
        if parsed.scheme in ("unix", ""):
            return cls(parsed.path or "/var/run/docker.sock", None, None, version)
        if parsed.scheme == "tcp" and os.environ.get("DOCKER_TLS_VERIFY", "") in ("", "0"):
            return cls(None, parsed.hostname or "127.0.0.1", parsed.port or 2375, version)
        raise EngineUnavailableError(f"unsupported DOCKER_HOST {url!r}: use a unix socket or plain tcp")


def process_start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` (clock ticks since boot), or '' if unknown.

    Stored next to the pid in container labels so that ``gc`` does not mistake
    a recycled pid for the pool's owner.
    """
    try:
        with open(f"/proc/{pid}/stat") as fh:
            data = fh.read()
    except OSError:
        return ""
    return data.rsplit(")", 1)[1].split()[19]


@dataclass
class ContainerLimits:
    """Per-container resource limits (the per-run limits are set by the executor)."""

    memory_mb: int = 512
    cpus: float = 1.0
    pids: int = 64
    disk_mb: int = 64
    tmp_mb: int = 16
    shm_mb: int = 16
    runtime: str | None = None  # e.g. "runsc" (gVisor) where installed; default runc
    extra_labels: dict[str, str] = field(default_factory=dict)


def owner_labels(pool_id: str, mode: str) -> dict[str, str]:
    pid = os.getpid()
    return {
        LABEL_POOL: pool_id,
        LABEL_PID: str(pid),
        LABEL_PID_START: process_start_time(pid),
        LABEL_HOST: socket.gethostname(),
        LABEL_MODE: mode,
    }


def create_spec(client: docker.DockerClient, image: str, labels: dict[str, str],
                limits: ContainerLimits) -> dict[str, Any]:
    """Keyword arguments for ``APIClient.create_container`` of a hardened sandbox.

    Every setting is a layer of the security model (see docs/sandbox.md):
    no network, no capabilities, no privilege gain, read-only root, small
    noexec tmpfs mounts as the only writable places, cgroup limits on memory,
    CPU and pids, a non-root uid and no host mounts.  ``stdin_once`` plus
    ``auto_remove`` make the container exit and vanish when the attaching
    process goes away, even if it is SIGKILLed.
    """
    tmpfs_opts = f"rw,nosuid,nodev,noexec,uid={SANDBOX_UID},gid={SANDBOX_UID}"
    host_config = client.api.create_host_config(
        network_mode="none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        read_only=True,
        tmpfs={
            WORKDIR: f"{tmpfs_opts},mode=0700,size={limits.disk_mb}m",
            "/tmp": f"{tmpfs_opts},mode=0700,size={limits.tmp_mb}m",
        },
        shm_size=f"{limits.shm_mb}m",
        pids_limit=limits.pids,
        mem_limit=f"{limits.memory_mb}m",
        memswap_limit=f"{limits.memory_mb}m",
        nano_cpus=int(limits.cpus * 1e9),
        log_config=LogConfig(type="none"),
        auto_remove=True,
        oom_score_adj=500,
        ulimits=[docker.types.Ulimit(name="core", soft=0, hard=0)],
        runtime=limits.runtime,
    )
    return {
        "image": image,
        "command": None,
        "user": f"{SANDBOX_UID}:{SANDBOX_UID}",
        "stdin_open": True,
        "tty": False,
        "labels": {**labels, **limits.extra_labels},
        "environment": {"LANG": "C.UTF-8", "MALLOC_ARENA_MAX": "2"},
        "hostname": "sandbox",
        "network_disabled": True,
        "host_config": host_config,
    }


def create_container(client: docker.DockerClient, spec: dict[str, Any]) -> str:
    """Create a container from :func:`create_spec` output, with ``StdinOnce`` set."""
    config = client.api.create_container_config(**spec)
    config["StdinOnce"] = True  # stdin closes (executor exits) when our attach goes away
    return client.api.create_container_from_config(config)["Id"]


def _remove_one(client: docker.DockerClient, cid: str) -> bool:
    try:
        client.api.remove_container(cid, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: removal already in progress (auto_remove)
            log.warning("could not remove container %s: %s", cid[:12], exc)
            return False
    return True


def remove_containers(client: docker.DockerClient, ids: list[str]) -> int:
    """Force-remove containers (in parallel); already-gone ones count as removed."""
    if len(ids) > 1:
        try:
            with ThreadPoolExecutor(min(8, len(ids)), thread_name_prefix="toolrl-sandbox-rm") as ex:
                return sum(ex.map(lambda cid: _remove_one(client, cid), ids))
        except RuntimeError:  # at interpreter shutdown (atexit) no new thread may start: one by one
            pass
    return sum(_remove_one(client, cid) for cid in ids)


def list_labelled(client: docker.DockerClient, **label_values: str) -> list[dict[str, Any]]:
    """Containers (any state) carrying the pool label, optionally with given values."""
    filters = [LABEL_POOL] + [f"{key}={value}" for key, value in label_values.items()]
    return client.api.containers(all=True, filters={"label": filters})


def wait_gone(client: docker.DockerClient, pool_id: str, timeout: float = 10.0) -> bool:
    """Wait until no container of ``pool_id`` exists (auto-removal is asynchronous)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not list_labelled(client, **{LABEL_POOL: pool_id}):
            return True
        time.sleep(0.05)
    return False
