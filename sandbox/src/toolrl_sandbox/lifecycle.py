"""Removing a process's containers when it exits or is told to stop.

Three layers make sure a pool leaves nothing behind:

1. ``SandboxPool.close()`` (``async with``) removes every container carrying
   the pool's label.  SIGINT reaches it through ``KeyboardInterrupt`` /
   task cancellation.
2. This module: an ``atexit`` hook and handlers for SIGTERM and SIGHUP (only
   where the process still has the default handler) remove the containers of
   every pool that is still open, synchronously, then let the signal do what
   it would have done.
3. The containers themselves: ``StdinOnce`` + ``AutoRemove`` make a
   container exit and disappear when its attach connection closes, which
   happens even on SIGKILL.  ``toolrl-sandbox gc`` sweeps up anything else.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from typing import Protocol

log = logging.getLogger(__name__)


class _Cleanable(Protocol):
    def emergency_cleanup(self) -> None: ...


_live: weakref.WeakSet[_Cleanable] = weakref.WeakSet()
_installed = False
_lock = threading.Lock()
_previous: dict[int, object] = {}


def register(pool: _Cleanable) -> None:
    global _installed
    with _lock:
        _live.add(pool)
        if _installed:
            return
        _installed = True
    atexit.register(cleanup_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:
            _previous[signum] = signal.SIG_DFL
            signal.signal(signum, _on_signal)


def unregister(pool: _Cleanable) -> None:
    _live.discard(pool)


def cleanup_all() -> None:
    for pool in list(_live):
        try:
            pool.emergency_cleanup()
        except Exception as exc:  # noqa: BLE001 - best effort while exiting
            log.warning("cleanup of a sandbox pool failed: %s", exc)
        _live.discard(pool)


def _on_signal(signum: int, _frame: object) -> None:
    log.info("signal %d: removing sandbox containers", signum)
    cleanup_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
