"""The Environment protocol and the run-scoped context environments share.

An environment executes the model's tool calls for one episode. Its factory is
registered through `register_environments` and is called once per episode as
`factory(ctx, **args)`, where `args` are the task's `env_args` over the
config's `envs.<name>` defaults. Expensive things that all episodes share (a
sandbox pool, an embedding model) live in `ctx`, created once per run (the
process's `toolrl.runtime` holds it and closes it when the run ends):

    async def embedder(ctx):
        return await ctx.shared("my-env/embedder", load_embedder, close=lambda e: e.close())

    pool = await ctx.sandbox_pool(size=4)   # the run's one sandbox pool, shared with code rewards
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from toolrl.types import Task, ToolCall, ToolResult

logger = logging.getLogger(__name__)

SANDBOX_POOL = "toolrl/sandbox-pool"
SANDBOX_BACKENDS = ("docker", "process")


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


def sandbox_pool_key(mode: str = "reuse", image: str | None = None) -> str:
    """The key under which `EnvContext.sandbox_pool` keeps the pool for these settings on the running loop."""
    return f"{SANDBOX_POOL}:{mode}:{image or 'default'}:{id(asyncio.get_running_loop())}"


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

    def sandbox_backend(self) -> str:
        """`docker` (the default) or `process`: from `envs.sandbox.backend`, else $TOOLRL_SANDBOX_BACKEND."""
        section = self.config.get("sandbox") or {}
        backend = str(section.get("backend") or os.environ.get("TOOLRL_SANDBOX_BACKEND") or "docker").lower()
        if backend not in SANDBOX_BACKENDS:
            from toolrl.errors import ToolrlError

            raise ToolrlError(f"unknown sandbox backend {backend!r}", where="envs.sandbox.backend / "
                              "$TOOLRL_SANDBOX_BACKEND", fix=f"use one of {', '.join(SANDBOX_BACKENDS)}")
        return backend

    async def sandbox_pool(self, *, size: int = 2, mode: str = "reuse", image: str | None = None,
                           where: str = "sandbox") -> Any:
        """The run's `toolrl_sandbox.SandboxPool` for these settings, started on first use, closed with the context.

        Environments (the python env) and rewards (code_pass_rate) of one process ask here, so a run starts
        one pool, not one per plugin. A pool's connections belong to the event loop that opened it, so the
        key holds the loop; `size` counts only for the first caller. `where` names the caller in errors.

        With `envs.sandbox.backend: process` (or TOOLRL_SANDBOX_BACKEND=process) the pool is a
        `toolrl_sandbox.process.ProcessPool` instead: local subprocesses with rlimits, NOT a security
        boundary, for throwaway machines without Docker (docs/sandbox.md); `mode` and `image` do not apply.
        """
        backend = self.sandbox_backend()
        key = sandbox_pool_key("process" if backend == "process" else mode, image)
        existing = self._items.get(key)
        if existing is not None:
            return existing

        async def create() -> Any:
            from toolrl.errors import ToolrlError

            try:
                import toolrl_sandbox as sandbox
            except ImportError as exc:
                if exc.name and exc.name.split(".")[0] != "toolrl_sandbox":  # it is there, a dependency is not
                    raise ToolrlError(f"toolrl_sandbox cannot be imported: {exc}", where=where,
                                      fix=f"install the missing dependency ({exc.name}), e.g. "
                                          "pip install -e ./sandbox, which installs them all") from exc
                raise ToolrlError("a sandbox pool needs the toolrl-sandbox distribution, which is not installed",
                                  where=where, fix="pip install -e ./sandbox (then build the image: "
                                                   "toolrl-sandbox build)") from exc
            if backend == "process":
                from toolrl_sandbox.process import ProcessPool

                proc_pool = ProcessPool(size=int(size))
                await proc_pool.start()
                logger.warning("sandbox: the run's python tool uses local processes (envs.sandbox.backend=process), "
                               "not Docker: not a security boundary; only for a throwaway machine")
                return proc_pool
            pool = sandbox.SandboxPool(size=int(size), mode=mode, image=image)
            try:
                await pool.start()
            except sandbox.EngineUnavailableError as exc:
                raise ToolrlError(f"the sandbox cannot reach Docker: {exc}", where=where,
                                  fix="start the Docker engine (bash scripts/ensure_docker.sh) and check "
                                      "`docker info`") from exc
            except sandbox.ImageMissingError as exc:
                raise ToolrlError(str(exc), where=where, fix="build it once: toolrl-sandbox build") from exc
            except sandbox.SandboxError as exc:
                raise ToolrlError(f"the sandbox pool did not start: {exc}", where=where,
                                  fix="check `docker info`, or ask for a smaller pool") from exc
            logger.info("sandbox pool of %d (%s) started for the run (first asked for by %s)", size, mode, where)
            return pool

        return await self.shared(key, create, close=lambda p: p.close())

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
