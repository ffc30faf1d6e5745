"""Loading an agent program from `env_args.entry` and running it on its own thread, with a deadline.

    entry: "my_package.agent:run"          # an importable module
    entry: "examples/agent_program/agent.py:run"   # or a file (relative to the working directory)

The function is `async def run(client: openai.AsyncOpenAI, task: dict) -> Any`
(or a plain `def run(client: openai.OpenAI, task: dict)`). Each episode runs on
a thread of its own with its own event loop, so a program that blocks (a
`time.sleep`, a CPU-heavy tool) holds up neither the endpoint nor the other
episodes. At the deadline an async program is cancelled; a program that does
not stop is abandoned (its thread is a daemon; its key is already refused).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import importlib
import importlib.util
import inspect
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolrl.errors import ToolrlError


class ProgramFailed(Exception):
    """The program raised; `trace` is its formatted traceback."""

    def __init__(self, trace: str):
        super().__init__(trace.strip().splitlines()[-1] if trace.strip() else "the program failed")
        self.trace = trace


@functools.lru_cache(maxsize=64)
def load_entry(entry: str, where: str = "env_args.entry") -> Callable[..., Any]:
    """The function `entry` names ("module:function" or "path/to/file.py:function")."""
    fix = 'write entry: "my_module:run" (importable) or "path/to/agent.py:run"; run(client, task) -> result'
    if not isinstance(entry, str) or entry.count(":") != 1 or not all(entry.split(":")):
        raise ToolrlError(f"entry must be 'module:function', got {entry!r}", where=where, fix=fix)
    module_name, attr = entry.split(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).resolve()
            if not path.is_file():
                raise ToolrlError(f"the program file {module_name!r} does not exist (looked in {path})", where=where,
                                  fix="give a path relative to the directory toolrl runs in, or an absolute one")
            name = "toolrl_program_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
            module = sys.modules.get(name)  # one module per file, whichever of its functions is the entry
            if module is None:
                spec = importlib.util.spec_from_file_location(name, path)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module  # dataclasses and pickling look modules up by name
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
        else:
            module = importlib.import_module(module_name)
    except ToolrlError:
        raise
    except Exception as exc:
        raise ToolrlError(f"importing the program {module_name!r} raised {type(exc).__name__}: {exc}", where=where,
                          fix="make the module importable (installed, or on PYTHONPATH), or give a .py path") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ToolrlError(f"{module_name!r} has no function {attr!r}", where=where, fix=fix)
    try:
        sig = inspect.signature(fn)
        sig.bind(object(), object())  # run(client, task)
    except (TypeError, ValueError):
        raise ToolrlError(f"{entry} must take two positional arguments, (client, task)", where=where,
                          fix="define async def run(client, task) -> result") from None
    return fn


class ProgramThread:
    """One episode's program, on its own thread and event loop."""

    def __init__(self, fn: Callable[..., Any], base_url: str, api_key: str, task: dict[str, Any], timeout: float,
                 name: str = "toolrl-program"):
        self.fn = fn
        self.base_url = base_url
        self.api_key = api_key
        self.task = task
        self.timeout = timeout
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main_task: asyncio.Task | None = None
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _main(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            if inspect.iscoroutinefunction(self.fn):
                value = self._run_async()
            else:
                value = self._run_sync()
        except BaseException:  # the program's failure, whatever it is, is this episode's
            self.future.set_exception(ProgramFailed(traceback.format_exc()))
        else:
            self.future.set_result(value)

    def _client_kwargs(self) -> dict[str, Any]:
        # loopback only: never through a proxy from the environment
        return dict(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout)

    def _run_async(self) -> Any:
        import openai

        async def main() -> Any:
            http = openai.DefaultAsyncHttpxClient(trust_env=False)
            async with openai.AsyncOpenAI(**self._client_kwargs(), http_client=http) as client:
                return await self.fn(client, self.task)

        loop = asyncio.new_event_loop()
        try:
            with self._lock:
                self._loop = loop
                self._main_task = loop.create_task(main())
            return loop.run_until_complete(self._main_task)
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                with self._lock:
                    self._loop = None
                loop.close()

    def _run_sync(self) -> Any:
        import openai

        with openai.OpenAI(**self._client_kwargs(), http_client=openai.DefaultHttpxClient(trust_env=False)) as client:
            return self.fn(client, self.task)

    def cancel(self) -> None:
        """Cancel an async program (a sync one cannot be stopped; it is left to finish on its own)."""
        with self._lock:
            if self._loop is not None and self._main_task is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._main_task.cancel)

    def where(self) -> str:
        """The program thread's current stack (to show where a hung program is)."""
        task = self._main_task
        if task is not None and not task.done():  # an async program: where its coroutines wait
            frames, coro = [], task.get_coro()
            while coro is not None and len(frames) < 50:  # follow the chain of awaits
                frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
                if frame is None:
                    break
                frames.append((frame, frame.f_lineno))
                coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
            return "".join(traceback.StackSummary.extract(frames).format())
        frame = sys._current_frames().get(self.thread.ident or -1)
        if frame is None:
            return ""
        return "".join(traceback.format_stack(frame))
