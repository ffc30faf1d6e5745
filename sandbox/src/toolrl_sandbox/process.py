"""``ProcessPool``: run snippets as plain local subprocesses, for throwaway machines without Docker.

**Not a security boundary.** Each snippet runs in a fresh ``python3 -I`` process with resource limits
(CPU time, address space, file size, open files, no core dumps), a wall-clock timeout, a scratch working
directory that is deleted afterwards and an environment emptied of the host's variables. Nothing stops
it from reading the machine's files, opening network connections or starting processes that outlive it
in another session. Use it only where the code it runs cannot hurt anything that matters: a rented GPU
machine that is wiped after the job (Docker is often missing there), never a workstation or a shared
server. The Docker pool (:class:`toolrl_sandbox.SandboxPool`) is the sandbox; this is a stand-in with
the same interface and the same :class:`ExecResult`.

Usage::

    async with ProcessPool(size=8) as pool:
        r = await pool.run("print(1 + 1)", timeout=5.0)
        assert r.status == "ok" and r.stdout == "2\\n"
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

from . import harness
from .errors import PoolClosedError, QueueFullError, QueueTimeoutError, SandboxError
from .results import ExecResult, TestReport

log = logging.getLogger(__name__)

WARNING = ("toolrl-sandbox process backend: snippets run as ordinary local processes with rlimits only; "
           "this is NOT a security boundary (use it only on a throwaway machine without Docker)")

# The child's first code: limits, then the snippet (read from a file that is removed before it runs) as
# __main__ under the name <snippet>, with python's own traceback minus this frame. Standard library only.
BOOT = r"""
import os, resource, sys
cpu, mem, fsize, nofile, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
with open(path, encoding="utf-8") as fh:
    source = fh.read()
os.unlink(path)
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
import linecache, types
linecache.cache["<snippet>"] = (len(source), None, source.splitlines(True), "<snippet>")
main = types.ModuleType("__main__")
main.__dict__["__builtins__"] = __builtins__
sys.modules["__main__"] = main
sys.argv = ["-c"]
sys.path[0] = os.getcwd()
del cpu, mem, fsize, nofile, path, fh
try:
    exec(compile(source, "<snippet>", "exec"), main.__dict__)
except SystemExit:
    raise
except BaseException:
    try:
        import traceback
        etype, value, tb = sys.exc_info()
        traceback.print_exception(etype, value, tb.tb_next if tb is not None else None)
    except BaseException:
        os.write(2, b"MemoryError\n" if sys.exc_info()[0] is MemoryError else b"error\n")
    sys.stdout.flush()
    os._exit(1)
"""

SNIPPET_FILE = ".toolrl_snippet.py"


class ProcessPool:
    """Up to ``size`` snippets at a time, each in a fresh local ``python3 -I`` process.

    Args:
        size: snippets run at once (the others wait in a queue).
        python: interpreter to run (default: this one, ``sys.executable``).
        max_queue: callers allowed to wait before :class:`QueueFullError` is raised at once.
        queue_timeout: seconds a caller waits for a free slot before :class:`QueueTimeoutError`.
        max_output: default cap in bytes for each of stdout and stderr.
        fsize_mb: largest file a snippet may write (RLIMIT_FSIZE).
        nofile: open files a snippet may hold (RLIMIT_NOFILE).
        scratch_root: where the per-run scratch directories are made (default: the system's temp dir).
    """

    mode = "process"

    def __init__(self, size: int = 4, *, python: str | None = None, max_queue: int = 1024,
                 queue_timeout: float = 60.0, max_output: int = 1 << 20, fsize_mb: int = 32, nofile: int = 256,
                 scratch_root: str | None = None) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self.python = python or sys.executable
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.max_output = max_output
        self.fsize_mb = fsize_mb
        self.nofile = nofile
        self.scratch_root = scratch_root
        self._slots: asyncio.Semaphore | None = None
        self._waiting = 0
        self._running: set[asyncio.subprocess.Process] = set()
        self._started = False
        self._closed = False
        self.stats: dict[str, int] = collections.Counter()

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> ProcessPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Check that the interpreter runs; log that this backend is not a sandbox."""
        if self._started:
            return
        if not (os.path.isfile(self.python) and os.access(self.python, os.X_OK)):
            raise SandboxError(f"process sandbox: interpreter {self.python!r} is not an executable file; "
                               "pass python=/path/to/python3")
        self._slots = asyncio.Semaphore(self.size)
        self._started = True
        log.warning(WARNING)
        log.info("process sandbox: %d slots, interpreter %s", self.size, self.python)

    async def close(self) -> None:
        """Kill whatever still runs; later calls raise :class:`PoolClosedError`."""
        if self._closed:
            return
        self._closed = True
        for proc in list(self._running):
            _kill_group(proc)

    # ------------------------------------------------------------------ runs
    async def _acquire(self) -> None:
        if not self._started or self._closed or self._slots is None:
            raise PoolClosedError("the process pool is not running (use `async with ProcessPool(...)`)")
        if self._slots.locked() and self._waiting >= self.max_queue:
            raise QueueFullError(f"{self._waiting} callers already wait for a slot (max_queue={self.max_queue})")
        self._waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self.queue_timeout)
        except asyncio.TimeoutError:
            raise QueueTimeoutError(f"no process slot became free within {self.queue_timeout} s") from None
        finally:
            self._waiting -= 1
        if self._closed:
            self._slots.release()
            raise PoolClosedError("the process pool was closed")

    async def run(self, code: str, stdin: str | bytes | None = None, files: Mapping[str, str | bytes] | None = None,
                  timeout: float = 5.0, memory_mb: int = 256, *, max_output: int | None = None,
                  env: Mapping[str, str] | None = None) -> ExecResult:
        """Run a Python snippet in a fresh local process (same arguments and result as ``SandboxPool.run``)."""
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if memory_mb < 16:
            raise ValueError("memory_mb must be at least 16")
        cap = int(max_output if max_output is not None else self.max_output)
        await self._acquire()
        assert self._slots is not None
        try:
            result = await self._run_one(code, stdin, files, float(timeout), int(memory_mb), cap, env)
        finally:
            self._slots.release()
        self.stats["runs"] += 1
        if result.status == "infra_error":
            self.stats["infra_errors"] += 1
        return result

    async def _run_one(self, code: str, stdin: str | bytes | None, files: Mapping[str, str | bytes] | None,
                       timeout: float, memory_mb: int, cap: int, env: Mapping[str, str] | None) -> ExecResult:
        scratch = tempfile.mkdtemp(prefix="toolrl-proc-", dir=self.scratch_root)
        t0 = time.monotonic()
        try:
            try:
                _write_files(scratch, files)
            except ValueError as exc:
                raise ValueError(f"process sandbox: {exc}") from None
            snippet = os.path.join(scratch, SNIPPET_FILE)
            with open(snippet, "w", encoding="utf-8") as fh:
                fh.write(code)
            child_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch,
                         "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1"}
            child_env.update({str(k): str(v) for k, v in (env or {}).items()})
            argv = [self.python, "-I", "-c", BOOT, str(int(timeout) + 1), str(memory_mb << 20),
                    str(self.fsize_mb << 20), str(self.nofile), snippet]
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, cwd=scratch, env=child_env, start_new_session=True,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            except OSError as exc:
                return ExecResult.infra(f"could not start {self.python}: {exc}", (time.monotonic() - t0) * 1000.0)
            self._running.add(proc)
            try:
                return await self._collect(proc, stdin, timeout, cap, t0)
            finally:
                self._running.discard(proc)
                _kill_group(proc)
        finally:
            await asyncio.to_thread(_remove_tree, scratch)

    async def _collect(self, proc: asyncio.subprocess.Process, stdin: str | bytes | None, timeout: float, cap: int,
                       t0: float) -> ExecResult:
        bufs = {"out": bytearray(), "err": bytearray()}
        over = asyncio.Event()

        async def pump(name: str, stream: asyncio.StreamReader | None) -> None:
            # reads to EOF even past the cap (discarding): a pipe left unread is never closed, and its transport
            # would be closed only by the garbage collector, after the event loop is gone
            if stream is None:
                return
            while True:
                data = await stream.read(1 << 16)
                if not data:
                    return
                room = cap - len(bufs[name])
                if room > 0:
                    bufs[name] += data[:room]
                if len(data) > room:
                    over.set()

        async def feed() -> None:
            if proc.stdin is None:
                return
            data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
            try:
                if data:
                    proc.stdin.write(data)
                    await proc.stdin.drain()
                proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass

        readers = asyncio.gather(pump("out", proc.stdout), pump("err", proc.stderr), feed())
        finished = asyncio.ensure_future(_wait_all(readers, proc))
        limit = asyncio.ensure_future(over.wait())
        done, _ = await asyncio.wait({finished, limit}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        reason: str | None = None
        if finished not in done:
            reason = "output_limit" if limit in done else "timeout"
            _kill_group(proc)
            try:
                await asyncio.wait_for(finished, 2.0)
            except asyncio.TimeoutError:  # a grandchild kept a pipe open: stop reading
                readers.cancel()
                await asyncio.gather(finished, return_exceptions=True)
        limit.cancel()
        wall_ms = (time.monotonic() - t0) * 1000.0
        rc = proc.returncode if proc.returncode is not None else await proc.wait()
        stderr = bufs["err"].decode("utf-8", "replace")
        if reason is None:
            if rc == 0:
                reason = "ok"
            elif rc == -signal.SIGXCPU:  # RLIMIT_CPU
                reason = "timeout"
            elif rc != 0 and stderr.rstrip().rsplit("\n", 1)[-1].startswith("MemoryError"):
                reason = "memory"
            else:
                reason = "error"
        return ExecResult(reason, bufs["out"].decode("utf-8", "replace"), stderr, rc, round(wall_ms, 3))  # type: ignore[arg-type]

    async def run_tests(self, code: str, tests: str | Sequence[Any], entry_point: str | None = None,
                        timeout: float = 10.0, memory_mb: int = 256, *, compare: harness.Compare = "lines",
                        max_output: int | None = None) -> TestReport:
        """stdin/stdout tests only (each case one run, compared here); function tests need the Docker pool."""
        cases = harness.io_cases(tests)
        if cases is None:
            raise SandboxError("process sandbox: only stdin/stdout tests are supported here (function tests run "
                               "in a separate grader process that only the Docker pool provides); use SandboxPool")
        harness.normalise("", compare)
        lanes = asyncio.Semaphore(self.size)

        async def case(inp: str) -> ExecResult:
            async with lanes:
                return await self.run(code, stdin=inp, timeout=timeout, memory_mb=memory_mb, max_output=max_output)

        results = await asyncio.gather(*(case(inp) for inp, _ in cases))
        return harness.io_report(results, cases, compare)

    # ---------------------------------------------------------------- status
    @property
    def idle(self) -> int:
        return self.size - len(self._running)

    @property
    def live(self) -> int:
        return len(self._running)


async def _wait_all(readers: asyncio.Future[Any], proc: asyncio.subprocess.Process) -> None:
    await readers
    await proc.wait()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the snippet's process group (it was started in a session of its own)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _write_files(root: str, files: Mapping[str, str | bytes] | None) -> None:
    for name, content in (files or {}).items():
        parts = name.replace("\\", "/").split("/")
        if not name or name.startswith("/") or ".." in parts or name == SNIPPET_FILE:
            raise ValueError(f"file name must be relative and stay inside the work directory: {name!r}")
        path = os.path.join(root, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(content.encode() if isinstance(content, str) else content)


def _remove_tree(path: str) -> None:
    def fix(func: Any, p: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=fix)
    else:
        shutil.rmtree(path, onerror=fix)
