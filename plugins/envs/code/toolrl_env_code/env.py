"""The `python` environment: a `python` tool that runs the model's code in the sandbox pool.

Every call runs in a fresh interpreter inside a hardened container
(toolrl-sandbox); the tool message is what the code printed (stdout, then
stderr), cut to `max_output_chars` with a marker. One `SandboxPool` is shared
by all episodes of a run through `EnvContext.shared` and closed when the run
ends. Failures of the sandbox itself (a container died, the pool queue is
full) come back as `ToolResult(infra_error=True)`, so the trajectory is
masked out of the update instead of scored.

Defaults come from the config's `envs.python` section:

    envs:
      python: {pool_size: 2, mode: reuse, timeout: 10, memory_mb: 256}
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from toolrl.env import SANDBOX_POOL
from toolrl.errors import ToolrlError
from toolrl.types import Task, ToolCall, ToolResult

logger = logging.getLogger(__name__)

ENV_NAME = "python"
SHARED_KEY = SANDBOX_POOL  # the run's pool lives in the EnvContext (toolrl.env.sandbox_pool_key)

PYTHON_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "python",
        "description": "Run Python 3 code in a fresh sandboxed interpreter (no network, no files kept between "
                       "calls) and return what it prints. Use print() to see results.",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python source to run."}},
            "required": ["code"],
        },
    },
}


def truncate(text: str, limit: int) -> str:
    """Keep the head and tail of `text` within `limit` characters, with a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    marker = "\n...[{} characters truncated]...\n"
    room = max(limit - len(marker.format(len(text))), 20)
    head = room * 2 // 3
    tail = room - head
    return text[:head] + marker.format(len(text) - head - tail) + text[len(text) - tail:]


_EXECUTOR_FRAME = re.compile(r'^  File "/opt/toolrl_sandbox/[^"]*", line \d+, in \w+\n(?:    .*\n)*', re.M)


def clean_traceback(stderr: str) -> str:
    """Drop the sandbox executor's own frames from a traceback (they only confuse the model)."""
    return _EXECUTOR_FRAME.sub("", stderr)


def format_result(result: Any, *, timeout: float, memory_mb: int, limit: int) -> str:
    """The tool message for one `ExecResult` (stdout, then stderr, then why it stopped)."""
    parts: list[str] = []
    stderr = clean_traceback(result.stderr)
    if result.stdout:
        parts.append(result.stdout.rstrip("\n"))
    if stderr.strip():
        parts.append(("stderr:\n" if result.stdout else "") + stderr.rstrip("\n"))
    status = result.status
    if status == "timeout":
        parts.append(f"[timed out after {timeout:g} s]")
    elif status == "memory":
        parts.append(f"[ran out of memory: the limit is {memory_mb} MB]")
    elif status == "output_limit":
        parts.append("[stopped: the code printed too much output]")
    elif status == "error" and not stderr.strip():
        parts.append(f"[exited with code {result.exit_code}]")
    if not parts:
        return "[no output: the code ran without printing anything; use print() to show values]"
    return truncate("\n".join(parts), limit)


async def shared_pool(ctx: Any, *, pool_size: int, mode: str, image: str | None) -> Any:
    """The run's sandbox pool (`EnvContext.sandbox_pool`: one per run, shared with code rewards)."""
    return await ctx.sandbox_pool(size=pool_size, mode=mode, image=image, where="envs.python")


class PythonEnv:
    """One episode with a `python` tool.

    Args (from the task's `env_args` over the config's `envs.python`):
        pool_size: containers in the run's shared pool (only the first episode's value counts).
        mode: "reuse" (reset between runs, fast) or "fresh" (a new container per run).
        timeout: seconds one call may run (wall clock; also the CPU limit).
        memory_mb: memory limit of one call.
        max_output_chars: longest tool message; longer output keeps its head and tail around a marker.
        max_calls: calls allowed per episode; later calls are refused with a message.
        image: sandbox image (default: toolrl-sandbox's own).
    """

    def __init__(self, ctx: Any, *, pool_size: int = 2, mode: str = "reuse", timeout: float = 10.0,
                 memory_mb: int = 256, max_output_chars: int = 2000, max_calls: int = 16, image: str | None = None):
        problems = []
        if not isinstance(pool_size, int) or pool_size < 1:
            problems.append(f"pool_size={pool_size!r} (use a whole number >= 1)")
        if mode not in ("reuse", "fresh"):
            problems.append(f"mode={mode!r} (use 'reuse' or 'fresh')")
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            problems.append(f"timeout={timeout!r} (use seconds > 0)")
        if not isinstance(memory_mb, int) or memory_mb < 16:
            problems.append(f"memory_mb={memory_mb!r} (use at least 16)")
        if not isinstance(max_output_chars, int) or max_output_chars < 100:
            problems.append(f"max_output_chars={max_output_chars!r} (use at least 100)")
        if problems:
            raise ToolrlError("python env: bad argument(s) " + "; ".join(problems), where="envs.python / env_args",
                              fix="e.g. envs.python.pool_size=2 envs.python.timeout=10")
        self.ctx = ctx
        self.pool_size = pool_size
        self.mode = mode
        self.timeout = float(timeout)
        self.memory_mb = memory_mb
        self.max_output_chars = max_output_chars
        self.max_calls = max_calls
        self.image = image
        self.pool: Any = None
        self.task_id: str | None = None
        self._runs: list[dict[str, Any]] = []

    async def reset(self, task: Task) -> None:
        self.task_id = task.id
        self._runs = []
        self.pool = await shared_pool(self.ctx, pool_size=self.pool_size, mode=self.mode, image=self.image)

    async def step(self, call: ToolCall) -> ToolResult:
        if call.name != "python":
            return ToolResult(f"Unknown tool {call.name!r}. The only tool is python(code).",
                              info={"status": "unknown_tool", "error": True})
        code = call.arguments.get("code")
        if not isinstance(code, str) or not code.strip():
            return ToolResult('python needs a non-empty "code" string, e.g. {"code": "print(2 + 2)"}.',
                              info={"status": "bad_arguments", "error": True})
        if len(self._runs) >= self.max_calls:
            return ToolResult(f"Call limit reached ({self.max_calls} python calls per task); give your answer now.",
                              info={"status": "call_limit", "error": True})
        if self.pool is None:
            return ToolResult("The sandbox is not ready (reset was not called).", infra_error=True,
                              info={"status": "infra_error"})
        from toolrl_sandbox import SandboxError

        try:
            result = await self.pool.run(code, timeout=self.timeout, memory_mb=self.memory_mb)
        except SandboxError as exc:  # queue full / timed out / pool closed: the infrastructure's fault
            logger.warning("python env: sandbox unavailable for task %s: %s", self.task_id, exc)
            self._runs.append({"status": "infra_error", "wall_ms": 0.0})
            return ToolResult(f"sandbox unavailable: {exc}", infra_error=True, info={"status": "infra_error"})
        self._runs.append({"status": result.status, "exit_code": result.exit_code, "wall_ms": result.wall_ms})
        info: Mapping[str, Any] = {"status": result.status, "exit_code": result.exit_code, "wall_ms": result.wall_ms,
                                   "error": result.status != "ok"}
        if result.status == "infra_error":
            return ToolResult(f"sandbox failure: {result.stderr.strip()}", infra_error=True, info=info)
        text = format_result(result, timeout=self.timeout, memory_mb=self.memory_mb, limit=self.max_output_chars)
        return ToolResult(text, info=info)

    def state(self) -> dict[str, Any]:
        statuses = [r["status"] for r in self._runs]
        return {
            "runs": [dict(r) for r in self._runs],
            "num_calls": len(self._runs),
            "num_ok": statuses.count("ok"),
            "num_errors": sum(1 for s in statuses if s not in ("ok", "infra_error")),
        }

    async def close(self) -> None:
        self.pool = None  # the pool is the run's: the EnvContext closes it


def python_env(ctx: Any, **args: Any) -> PythonEnv:
    """Factory registered as environment `python`."""
    import inspect

    allowed = [p for p in inspect.signature(PythonEnv.__init__).parameters if p not in ("self", "ctx")]
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ToolrlError(f"python env: unknown argument(s) {unknown}", where="task env_args / envs.python",
                          fix=f"valid arguments: {', '.join(allowed)}")
    return PythonEnv(ctx, **args)
