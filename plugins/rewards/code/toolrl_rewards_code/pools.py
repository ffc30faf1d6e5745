"""One sandbox pool per process (per event loop and settings), made on first use.

Starting containers is expensive, so `code_pass_rate` never starts a pool per
call: `get_pool(size, mode)` returns the pool already running on the current
event loop with those settings, or starts one (concurrent first callers wait
for the same start). Pools are closed by `close_pools()` (a trainer may call it
at the end of a run) and, failing that, when the process exits (the containers
are removed synchronously then; toolrl-sandbox also removes them on SIGTERM and
when the process dies, since they end with their attach connection). A pool whose
event loop has been closed is removed (synchronously) the next time a pool is
asked for.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from typing import Any

from toolrl.errors import RewardError

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_pools: dict[tuple[asyncio.AbstractEventLoop, int, str], Any] = {}
_starting: dict[tuple[asyncio.AbstractEventLoop, int, str], asyncio.Future[Any]] = {}
_atexit_installed = False


async def get_pool(size: int = 2, mode: str = "reuse") -> Any:
    """The running `toolrl_sandbox.SandboxPool` for this event loop with these settings.

    Raises:
        RewardError: the sandbox cannot start (no Docker engine, no image), with the fix.
    """
    loop = asyncio.get_running_loop()
    key = (loop, int(size), str(mode))
    _drop_dead_pools()
    while True:
        with _lock:
            pool = _pools.get(key)
            if pool is not None:
                return pool
            fut = _starting.get(key)
            mine = fut is None
            if mine:
                fut = loop.create_future()
                _starting[key] = fut
        assert fut is not None
        if not mine:
            await asyncio.wait([fut])  # another caller is starting it: wait, then look again
            if not fut.cancelled() and fut.exception() is not None:
                raise fut.exception()  # type: ignore[misc]
            continue
        try:
            pool = await _start(int(size), str(mode))
        except BaseException as exc:
            with _lock:
                _starting.pop(key, None)
            if isinstance(exc, Exception):
                fut.set_exception(exc)
                fut.exception()  # retrieved here; the waiters raise it themselves
            else:  # cancelled: a waiter will start it instead
                fut.cancel()
            raise
        with _lock:
            _pools[key] = pool
            _starting.pop(key, None)
        _install_atexit()
        fut.set_result(pool)
        return pool


async def _start(size: int, mode: str) -> Any:
    try:
        import toolrl_sandbox as sandbox
    except ImportError as exc:
        raise RewardError("code_pass_rate needs the toolrl-sandbox package, which is not installed",
                          fix="pip install ./sandbox (from the toolrl repository), or run `make`") from exc
    logger.info("starting a sandbox pool for code rewards (size=%d, mode=%s)", size, mode)
    pool = sandbox.SandboxPool(size, mode=mode)
    try:
        await pool.start()
    except sandbox.SandboxError as exc:
        raise RewardError(
            f"code_pass_rate could not start the sandbox pool: {exc}",
            where="the toolrl-sandbox pool",
            fix="start the Docker engine and build the image with `toolrl-sandbox build` "
                "(`toolrl doctor` checks both)",
        ) from exc
    return pool


async def close_pools() -> int:
    """Close every pool that runs on the current event loop; returns how many were closed."""
    loop = asyncio.get_running_loop()
    with _lock:
        mine = [(k, p) for k, p in _pools.items() if k[0] is loop]
        for k, _ in mine:
            _pools.pop(k, None)
    for _, pool in mine:
        await pool.close()
    return len(mine)


def live_pools() -> list[Any]:
    """The pools currently kept (for tests and diagnostics)."""
    with _lock:
        return list(_pools.values())


def _drop_dead_pools() -> None:
    with _lock:
        dead = [(k, p) for k, p in _pools.items() if k[0].is_closed()]
        for k, _ in dead:
            _pools.pop(k, None)
    for _, pool in dead:
        _cleanup_sync(pool)


def _cleanup_sync(pool: Any) -> None:
    try:
        pool.emergency_cleanup()
    except Exception:  # the engine may be gone at exit; the containers remove themselves
        logger.warning("could not remove the containers of a sandbox pool", exc_info=True)


def _close_all_at_exit() -> None:
    # At exit the default executor is already shut down, so the async close (which
    # talks to Docker in a thread) cannot run: remove the containers synchronously.
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        _cleanup_sync(pool)


def _install_atexit() -> None:
    global _atexit_installed
    with _lock:
        if _atexit_installed:
            return
        _atexit_installed = True
    atexit.register(_close_all_at_exit)
