"""Reading a child's stdout/stderr into capped buffers while waiting for it (in-container, standard library
only; beside ``executor.py``, used by ``executor.run`` and ``grade_run.run_grade``)."""

from __future__ import annotations

import os
import select
import time


def capture(pid: int, out_r: int, err_r: int, cap: int, deadline: float, statuses: dict, pidfd: int = -1):
    """Collect a child's stdout and stderr, each kept to `cap` bytes, until it exits, `deadline` passes
    ("timeout") or an output passes its cap ("output_limit"). A pidfd (>= 0) wakes the poll at the
    child's exit; without one the poll wakes every 2 ms. Returns (bufs, reason or None, wait status or None)."""
    bufs = {out_r: bytearray(), err_r: bytearray()}
    poller = select.poll()
    for fd in bufs:
        poller.register(fd, select.POLLIN)
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    reason = status = None
    while status is None and reason is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bufs, "timeout", None
        for fd, _ev in poller.poll(remaining * 1000 if pidfd >= 0 else min(remaining * 1000, 2)):
            if fd == pidfd:
                continue
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not data:
                poller.unregister(fd)
                continue
            room = cap - len(bufs[fd])
            bufs[fd] += data[:max(room, 0)]
            if len(data) > room:
                reason = "output_limit"
        if reason is None:
            try:
                wpid, st = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                wpid, st = pid, statuses.pop(pid, 0)
            if wpid == pid:
                status = st
    return bufs, reason, status


def _drain(bufs: dict, caps: dict) -> None:
    """Read what is left in the pipes; every writer is dead, so EOF comes."""
    end = time.monotonic() + 0.5
    pending = set(bufs)
    for fd in pending:
        os.set_blocking(fd, False)
    while pending and time.monotonic() < end:
        for fd in list(pending):
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not data:
                pending.discard(fd)
                continue
            room = caps[fd] - len(bufs[fd])
            if room > 0:
                bufs[fd] += data[:room]
        if pending:
            select.select(list(pending), [], [], 0.05)

