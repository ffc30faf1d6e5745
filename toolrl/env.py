"""The Environment protocol and the run-scoped context environments share.

An environment executes the model's tool calls for one episode. Its factory is
registered through `register_environments` and is called once per episode as
`factory(ctx, **args)`, where `args` are the task's `env_args` over the
config's `envs.<name>` defaults. Expensive things that all episodes share (a
sandbox pool, an embedding model) live in `ctx`, created once per run:

    async def pool(ctx):
        return await ctx.shared("sandbox-pool", make_pool, close=lambda p: p.close())
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from toolrl.types import Task, ToolCall, ToolResult

logger = logging.getLogger(__name__)


@runtime_checkable
class Environment(Protocol):
    """One episode's tool executor. All methods may be sync or async."""

    async def reset(self, task: Task) -> None:
        """Start the episode for `task` (set up state, files, memory …)."""
        ...

    async def step(self, call: ToolCall) -> ToolResult:
        """Execute one tool call. Raise nothing for the model's mistakes: return a ToolResult saying what was wrong."""
        ...

    def state(self) -> Any:
        """The episode's final state, passed to rewards as `env_states[i]`."""
        ...

    async def close(self) -> None:
        """Release per-episode resources."""
        ...


class EnvContext:
    """Run-scoped shared resources (created lazily, closed once at the end of the run)."""

    def __init__(self, config: Mapping[str, Any] | None = None):
        self.config: Mapping[str, Any] = dict(config or {})
        self._items: dict[str, Any] = {}
        self._closers: list[tuple[str, Callable[[Any], Any]]] = []
        self._locks: dict[str, asyncio.Lock] = {}

    async def shared(
        self,
        key: str,
        create: Callable[[], Any | Awaitable[Any]],
        close: Callable[[Any], Any] | None = None,
    ) -> Any:
        """Return the resource under `key`, creating it with `create()` the first time."""
        if key in self._items:
            return self._items[key]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._items:
                value = create()
                if inspect.isawaitable(value):
                    value = await value
                self._items[key] = value
                if close is not None:
                    self._closers.append((key, close))
        return self._items[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._items.get(key, default)

    async def aclose(self) -> None:
        """Close every shared resource, newest first; errors are logged, not raised."""
        while self._closers:
            key, close = self._closers.pop()
            try:
                result = close(self._items.pop(key, None))
                if inspect.isawaitable(result):
                    await result
            except Exception:  # closing must go on for the others
                logger.exception("closing shared resource %r failed", key)
        self._items.clear()


async def maybe_await(value: Any) -> Any:
    """Await `value` if it is awaitable (lets plugin methods be sync or async)."""
    if inspect.isawaitable(value):
        return await value
    return value
