"""``SyncSandboxPool``: the pool for callers without an event loop.

It runs a :class:`SandboxPool` on a private event loop in a daemon thread::

    with SyncSandboxPool(size=2) as pool:
        print(pool.run("print(42)").stdout)
        results = pool.run_many(["print(1)", "print(2)"])
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from .errors import PoolClosedError
from .pool import SandboxPool
from .results import ExecResult, TestReport

T = TypeVar("T")


class SyncSandboxPool:
    """Blocking facade over :class:`SandboxPool`; takes the same arguments."""

    def __init__(self, size: int = 4, **kwargs: Any) -> None:
        self._args = (size, kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.pool: SandboxPool | None = None

    def __enter__(self) -> SyncSandboxPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="toolrl-sandbox-loop", daemon=True)
        self._thread.start()
        self._loop = loop
        size, kwargs = self._args

        async def make() -> SandboxPool:
            pool = SandboxPool(size, **kwargs)
            await pool.start()
            return pool

        try:
            self.pool = self._call(make())
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise PoolClosedError("the pool is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _stop_loop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            self._loop.close()
            self._loop = None

    def close(self) -> None:
        if self._loop is None:
            return
        try:
            if self.pool is not None:
                self._call(self.pool.close())
        finally:
            self._stop_loop()

    def _require(self) -> SandboxPool:
        if self.pool is None:
            raise PoolClosedError("the pool is not started")
        return self.pool

    def run(self, code: str, stdin: str | bytes | None = None, files: Mapping[str, str | bytes] | None = None,
            timeout: float = 5.0, memory_mb: int = 256, **kwargs: Any) -> ExecResult:
        """See :meth:`SandboxPool.run`."""
        return self._call(self._require().run(code, stdin, files, timeout, memory_mb, **kwargs))

    def run_tests(self, code: str, tests: str | Sequence[Any], entry_point: str | None = None,
                  timeout: float = 10.0, memory_mb: int = 256, **kwargs: Any) -> TestReport:
        """See :meth:`SandboxPool.run_tests`."""
        return self._call(self._require().run_tests(code, tests, entry_point, timeout, memory_mb, **kwargs))

    def run_many(self, codes: Sequence[str], **kwargs: Any) -> list[ExecResult]:
        """Run several snippets concurrently (as many at once as the pool allows)."""
        pool = self._require()

        async def gather() -> list[ExecResult]:
            return list(await asyncio.gather(*(pool.run(code, **kwargs) for code in codes)))

        return self._call(gather())
