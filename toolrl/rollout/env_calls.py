"""Calling environment plugin methods from the agent loop: sync or async, always with a timeout.

Environment methods may be plain functions or coroutines (`toolrl.env`). A
coroutine runs on the event loop under `asyncio.wait_for`; a plain function
runs on a worker thread, so a blocking or hung `step` neither stalls the
other episodes nor escapes the timeout (the hung thread is abandoned; the
episode ends with finish reason `error`). Coroutines must not block: a
blocking call inside `async def` holds the whole loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from collections.abc import Callable
from typing import Any


class EnvTimeoutError(Exception):
    """An environment method ran past `rollout.env_timeout`."""


class EnvCaller:
    """Runs environment methods with a timeout; owns the thread pool for sync methods."""

    def __init__(self, timeout: float, max_threads: int = 64):
        self.timeout = timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="toolrl-env")

    async def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            if inspect.iscoroutinefunction(fn):
                return await asyncio.wait_for(fn(*args, **kwargs), self.timeout)
            value = await asyncio.wait_for(loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs)), self.timeout)
            if inspect.isawaitable(value):  # a sync function that returned a coroutine or future
                value = await asyncio.wait_for(value, max(deadline - loop.time(), 0.001))
            return value
        except asyncio.TimeoutError:
            raise EnvTimeoutError(f"{what} did not finish within rollout.env_timeout={self.timeout:g}s") from None

    def close(self) -> None:
        # do not wait: a hung environment thread must not hold up the batch
        self._pool.shutdown(wait=False, cancel_futures=True)
