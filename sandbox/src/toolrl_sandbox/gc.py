"""``toolrl-sandbox gc``: remove containers left behind by crashed runs.

A container is a leftover when the process that owned it (labels
``toolrl-sandbox.pid`` + ``toolrl-sandbox.pid-start`` on this host) is no
longer alive.  Containers of another host (a shared remote engine) are left
alone unless ``all_containers`` is set; ``pool_id`` limits either to one pool.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

import docker

from . import engine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GcReport:
    removed: tuple[str, ...]
    kept: tuple[str, ...]

    def describe(self) -> str:
        return f"removed {len(self.removed)} sandbox container(s), kept {len(self.kept)} owned by live processes"


def owner_alive(labels: dict[str, str]) -> bool:
    """True if the process named by the container's labels still runs here."""
    if labels.get(engine.LABEL_HOST) not in (None, socket.gethostname()):
        return True  # not ours to judge
    try:
        pid = int(labels.get(engine.LABEL_PID, ""))
    except ValueError:
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, other user
    started = labels.get(engine.LABEL_PID_START)
    return not started or engine.process_start_time(pid) == started


def collect(client: docker.DockerClient | None = None, all_containers: bool = False,
            pool_id: str | None = None) -> GcReport:
    """Remove the leftovers (or, with ``all_containers``, every sandbox container); with ``pool_id``, look only
    at that pool's containers, so another run's pools on the same engine are left alone."""
    client = client or engine.connect()
    removed: list[str] = []
    kept: list[str] = []
    only = {engine.LABEL_POOL: pool_id} if pool_id else {}
    for info in engine.list_labelled(client, **only):
        cid = info["Id"]
        if all_containers or not owner_alive(info.get("Labels") or {}):
            engine.remove_containers(client, [cid])
            removed.append(cid)
        else:
            kept.append(cid)
    if removed:
        log.info("gc removed %d container(s)", len(removed))
    return GcReport(tuple(removed), tuple(kept))
