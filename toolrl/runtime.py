"""The run's shared resources in one process: the event loop and the environment context.

Every process of a run (the driver, each trainer rank that rolls out, each
engine actor, `toolrl eval`) has one `Runtime`, made on first use:

    from toolrl import runtime

    rt = runtime.current()                     # this process's runtime (made on first use)
    trajs = rt.run(run_episodes(...))          # episodes, rewards: one event loop per process
    pool = await rt.env.sandbox_pool(size=4)   # one sandbox pool per process, shared by envs and rewards
    runtime.close()                            # at the end of the run: pools, embedders, the loop

`rt.env` is the `toolrl.env.EnvContext` that environment factories receive as
`ctx` and that rewards reach through `runtime.current().env`: a sandbox pool or
an embedding model created there once is shared by every episode and every
reward call of the run, and closed once by `runtime.close()`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from toolrl.env import EnvContext

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Runtime:
    """One process's event loop and environment context."""

    def __init__(self, envs: Mapping[str, Any] | None = None):
        self.loop = asyncio.new_event_loop()
        self.env = EnvContext(envs)
        self._lock = threading.RLock()

    @property
    def closed(self) -> bool:
        return self.loop.is_closed()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` to completion on this process's loop (one caller at a time)."""
        with self._lock:
            return self.loop.run_until_complete(coro)

    def configure(self, envs: Mapping[str, Any] | None) -> Runtime:
        """Set the `envs.<name>` defaults that environment factories read from `ctx.config`."""
        if envs is not None:
            self.env.config = dict(envs)
        return self

    def close(self) -> None:
        """Close the shared resources (newest first), then the loop. Errors are logged, not raised."""
        if self.loop.is_closed():
            return
        with self._lock:
            try:
                self.loop.run_until_complete(self.env.aclose())
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            except Exception:
                logger.exception("closing the run's shared resources failed")
            finally:
                self.loop.close()


_current: Runtime | None = None
_current_lock = threading.Lock()


def current(envs: Mapping[str, Any] | None = None) -> Runtime:
    """This process's runtime, made on first use (a closed one is replaced); `envs` updates its env defaults."""
    global _current
    with _current_lock:
        if _current is None or _current.closed:
            _current = Runtime(envs)
        elif envs is not None:
            _current.configure(envs)
        return _current


def register_plugins(plugins: Sequence[object]) -> None:
    """Register plugin objects or modules in this process's plugin manager (already registered ones are skipped).

    `toolrl.train(config, plugins=[...])` calls it on the driver and in every worker process it starts.
    """
    if not plugins:
        return
    from toolrl import plugins as registry

    manager = registry.get_manager()
    for plugin in plugins:
        if not manager.pm.is_registered(plugin):
            manager.register(plugin)


def close() -> None:
    """Close this process's runtime (the next `current()` makes a new one)."""
    global _current
    with _current_lock:
        rt, _current = _current, None
    if rt is not None:
        rt.close()
