"""``SandboxPool``: a warm pool of hardened containers running the executor.

Usage::

    async with SandboxPool(size=4) as pool:
        r = await pool.run("print(1 + 1)", timeout=5.0)
        assert r.status == "ok" and r.stdout == "2\\n"

Each container's main process is the executor (``executor.py``); the pool
holds one attach connection per container and sends it one request at a
time, so a run costs a fork inside the container and two small messages, not
a ``docker exec``.  In ``reuse`` mode a container serves many runs and is
reset by the executor in between; in ``fresh`` mode every run gets a
container that never ran anything, and used ones are replaced in the
background.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import docker

from . import engine, harness, lifecycle
from .engine import ContainerLimits
from .errors import PoolClosedError, QueueFullError, QueueTimeoutError, SandboxError
from .image import default_image, require_image
from .protocol import AttachStream, ConnectionLost, encode_blob
from .results import ExecResult, TestReport

log = logging.getLogger(__name__)

Mode = Literal["reuse", "fresh"]
_ids = itertools.count(1)


@dataclass
class _Sandbox:
    cid: str
    stream: AttachStream
    runs: int = 0


class SandboxPool:
    """A pool of ``size`` pre-started sandbox containers.

    Args:
        size: containers kept started (and, in ``fresh`` mode, kept unused).
        mode: ``"reuse"`` (reset between runs) or ``"fresh"`` (one container per run).
        image: image to run; default ``toolrl-sandbox:<version>``.
        limits: per-container cgroup/tmpfs limits (memory, CPUs, pids, disk).
        max_queue: callers allowed to wait for a container before
            :class:`QueueFullError` is raised at once.
        queue_timeout: seconds a caller waits before :class:`QueueTimeoutError`.
        max_output: default cap in bytes for each of stdout and stderr.
        grace_s: extra seconds the host waits beyond a run's timeout before
            declaring the container broken (``infra_error``).
        startup_timeout: seconds a new container has to say hello.
        client: a ``docker.DockerClient``; default from the environment.
    """

    def __init__(self, size: int = 4, *, mode: Mode = "reuse", image: str | None = None,
                 limits: ContainerLimits | None = None, max_queue: int = 1024,
                 queue_timeout: float = 60.0, max_output: int = 1 << 20, grace_s: float = 2.0,
                 startup_timeout: float = 30.0, spawn_concurrency: int = 4,
                 client: docker.DockerClient | None = None) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        if mode not in ("reuse", "fresh"):
            raise ValueError("mode must be 'reuse' or 'fresh'")
        self.size = size
        self.mode: Mode = mode
        self.image = image or default_image()
        self.limits = limits or ContainerLimits()
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.max_output = max_output
        self.grace_s = grace_s
        self.startup_timeout = startup_timeout
        self.pool_id = f"{uuid.uuid4().hex[:12]}"
        self._client = client
        self._endpoint: engine.Endpoint | None = None
        self._spec: dict[str, Any] | None = None
        self._spawn_sem = asyncio.Semaphore(spawn_concurrency)
        self._idle: collections.deque[_Sandbox] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[_Sandbox]] = collections.deque()
        self._n_waiting = 0
        self._live: dict[str, _Sandbox] = {}
        self._spawning = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._closed = False
        self._last_spawn_error: str | None = None
        self._req_ids = itertools.count(1)
        self.stats: dict[str, int] = collections.Counter()

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> SandboxPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect, check the image and start ``size`` containers (all must start)."""
        if self._started:
            return
        if self._client is None:
            self._client = await asyncio.to_thread(engine.connect)
        client = self._client
        await asyncio.to_thread(require_image, client, self.image)
        self._endpoint = engine.Endpoint.from_client(client)
        labels = engine.owner_labels(self.pool_id, self.mode)
        self._spec = engine.create_spec(client, self.image, labels, self.limits)
        self._started = True
        lifecycle.register(self)
        results = await asyncio.gather(*(self._spawn() for _ in range(self.size)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.close()
            raise SandboxError(f"could not start the sandbox containers: {errors[0]!r}") from errors[0]
        for sb in results:
            self._put_idle(sb)  # type: ignore[arg-type]
        log.info("sandbox pool %s: %d %s containers ready", self.pool_id, self.size, self.mode)

    async def close(self) -> None:
        """Stop everything and remove every container of this pool."""
        if self._closed:
            return
        self._closed = True
        for fut in self._waiters:
            if not fut.done():
                fut.set_exception(PoolClosedError("the sandbox pool was closed"))
        self._waiters.clear()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sb in list(self._live.values()):
            sb.stream.close()
        self._idle.clear()
        self._live.clear()
        if self._client is not None and self._started:
            await asyncio.shield(asyncio.to_thread(self._remove_all, self._client))
        lifecycle.unregister(self)

    def _remove_all(self, client: docker.DockerClient) -> None:
        ids = [c["Id"] for c in engine.list_labelled(client, **{engine.LABEL_POOL: self.pool_id})]
        engine.remove_containers(client, ids)
        engine.wait_gone(client, self.pool_id, timeout=10.0)

    def emergency_cleanup(self) -> None:
        """Synchronous removal, for atexit and signal handlers (fresh client: no shared state)."""
        if self._closed or not self._started:
            return
        self._closed = True
        self._remove_all(docker.from_env(timeout=30))

    # -------------------------------------------------------------- spawning
    async def _spawn(self) -> _Sandbox:
        assert self._client is not None and self._spec is not None and self._endpoint is not None
        client = self._client
        self._spawning += 1
        try:
            async with self._spawn_sem:
                if self._closed:
                    raise PoolClosedError("pool closed")
                # cancelling this coroutine (close() cancels refills) does not stop the create call's thread:
                # on cancellation, wait for the container it makes and remove it, or it outlives close()
                create = asyncio.ensure_future(asyncio.to_thread(engine.create_container, client, self._spec))
                try:
                    cid = await asyncio.shield(create)
                except asyncio.CancelledError:
                    with contextlib.suppress(Exception):
                        made = await create
                        await asyncio.to_thread(engine.remove_containers, client, [made])
                    raise
                stream: AttachStream | None = None
                try:
                    stream = await AttachStream.open(self._endpoint, cid)
                    await asyncio.to_thread(client.api.start, cid)
                    hello = await asyncio.wait_for(stream.receive(), self.startup_timeout)
                    if hello.get("op") != "hello":
                        raise ConnectionLost(f"unexpected first message {hello!r}")
                    if hello.get("pid") != 1 or not hello.get("nondumpable"):
                        log.warning("container %s: executor is not a protected PID 1 (%r)", cid[:12], hello)
                except BaseException:
                    if stream is not None:
                        stream.close()
                    await asyncio.shield(asyncio.to_thread(engine.remove_containers, client, [cid]))
                    raise
                if self._closed:
                    stream.close()
                    await asyncio.to_thread(engine.remove_containers, client, [cid])
                    raise PoolClosedError("pool closed")
                sb = _Sandbox(cid, stream)
                self._live[cid] = sb
                self.stats["spawned"] += 1
                return sb
        finally:
            self._spawning -= 1

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refill(self) -> None:
        """Start spawns until live + spawning reaches ``size``."""
        if self._closed:
            return
        for _ in range(self.size - len(self._live) - self._spawning):
            self._spawning += 1  # reserve the slot now; _refill_one hands it over
            self._background(self._refill_one())

    async def _refill_one(self) -> None:
        delay = 0.5
        self._spawning -= 1
        while not self._closed:
            try:
                sb = await self._spawn()
            except PoolClosedError:
                return
            except Exception as exc:  # noqa: BLE001 - the engine may be down for a while
                self._last_spawn_error = repr(exc)
                self.stats["spawn_failures"] += 1
                log.warning("sandbox pool %s: starting a container failed: %s (retry in %.1f s)",
                            self.pool_id, exc, delay)
                self._spawning += 1
                try:
                    await asyncio.sleep(delay)
                finally:
                    self._spawning -= 1
                delay = min(delay * 2, 10.0)
                continue
            self._put_idle(sb)
            return

    def _retire(self, sb: _Sandbox, broken: bool) -> None:
        """Drop a container: closing its stdin makes it exit and auto-remove;
        a broken one is also force-removed.  Then top the pool up."""
        self._live.pop(sb.cid, None)
        sb.stream.close()
        self.stats["retired"] += 1
        if broken and self._client is not None:
            self._background(asyncio.to_thread(engine.remove_containers, self._client, [sb.cid]))
        self._refill()

    # ------------------------------------------------------ acquire/release
    def _put_idle(self, sb: _Sandbox) -> None:
        if self._closed:
            sb.stream.close()
            return
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(sb)
                return
        self._idle.append(sb)

    async def _acquire(self) -> _Sandbox:
        if not self._started or self._closed:
            raise PoolClosedError("the sandbox pool is not running (use `async with SandboxPool(...)`)")
        while self._idle and not self._waiters:
            sb = self._idle.popleft()
            if not sb.stream.closed:
                return sb
            log.warning("container %s died while idle; replacing it", sb.cid[:12])
            self.stats["infra_errors"] += 1
            self._retire(sb, broken=True)
        if self._n_waiting >= self.max_queue:
            raise QueueFullError(f"{self._n_waiting} callers already wait for a sandbox (max_queue={self.max_queue})")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_Sandbox] = loop.create_future()

        def expire() -> None:
            if not fut.done():
                hint = f"; last container start error: {self._last_spawn_error}" if self._last_spawn_error else ""
                fut.set_exception(QueueTimeoutError(
                    f"no sandbox became free within {self.queue_timeout} s{hint}"))

        self._waiters.append(fut)
        self._n_waiting += 1
        timer = loop.call_later(self.queue_timeout, expire)
        try:
            sb = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._put_idle(fut.result())  # got one just as we were cancelled: pass it on
            raise
        finally:
            timer.cancel()
            self._n_waiting -= 1
        if sb.stream.closed:
            self.stats["infra_errors"] += 1
            self._retire(sb, broken=True)
            return await self._acquire()
        return sb

    def _release(self, sb: _Sandbox, healthy: bool) -> None:
        if self._closed:
            sb.stream.close()
            return
        if healthy and self.mode == "reuse":
            self._put_idle(sb)
        else:
            self._retire(sb, broken=not healthy)

    # ------------------------------------------------------------------ runs
    async def _execute(self, code: str, *, stdin: str | bytes | None, files: Mapping[str, str | bytes] | None,
                       timeout: float, memory_mb: int, max_output: int | None,
                       env: Mapping[str, str] | None, op: str = "run",
                       tests: dict[str, Any] | None = None) -> tuple[ExecResult, str]:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        req = {
            "op": op, "id": next(self._req_ids), "code": code, "stdin": encode_blob(stdin),
            "files": {name: encode_blob(data) for name, data in (files or {}).items()},
            "timeout": float(timeout), "memory_mb": int(memory_mb),
            "max_output": int(max_output if max_output is not None else self.max_output),
            "env": dict(env or {}),
        }
        sb = await self._acquire()
        healthy = False
        t0 = time.monotonic()
        try:
            outcomes: list[dict[str, Any]] = []
            resp = await asyncio.wait_for(sb.stream.request(req, *([tests] if tests else []), outcomes=outcomes),
                                          timeout + self.grace_s)
            if resp.get("id") != req["id"]:
                raise ConnectionLost(f"response id {resp.get('id')!r} does not match request {req['id']}")
            sb.runs += 1
            result = ExecResult.from_response(resp)
            healthy = not resp.get("tainted", False) and result.status != "infra_error"
            if resp.get("bad_request"):
                raise ValueError(resp.get("stderr", "bad request").strip())
            self.stats["runs"] += 1
            if result.status == "infra_error":
                self.stats["infra_errors"] += 1
            elif not healthy:
                self.stats["tainted"] += 1
            return result, "".join(json.dumps(o.get("rec")) + "\n" for o in outcomes)
        except (ConnectionLost, asyncio.TimeoutError, OSError) as exc:
            self.stats["infra_errors"] += 1
            why = "no answer in time" if isinstance(exc, asyncio.TimeoutError) else str(exc) or repr(exc)
            log.warning("sandbox %s failed (%s); replacing it", sb.cid[:12], why)
            return ExecResult.infra(f"container {sb.cid[:12]} failed: {why}",
                                    (time.monotonic() - t0) * 1000.0), ""
        finally:
            self._release(sb, healthy)

    async def run(self, code: str, stdin: str | bytes | None = None, files: Mapping[str, str | bytes] | None = None,
                  timeout: float = 5.0, memory_mb: int = 256, *, max_output: int | None = None,
                  env: Mapping[str, str] | None = None) -> ExecResult:
        """Run a Python snippet in a sandbox.

        Args:
            code: Python source, run as ``__main__`` with the work directory as cwd.
            stdin: data on the snippet's stdin.
            files: ``{relative path: content}`` written into the work directory first.
            timeout: wall-clock seconds; also sets the CPU-time limit.
            memory_mb: address-space limit of the snippet's processes.
            max_output: bytes kept of each of stdout and stderr (more is ``output_limit``).
            env: extra environment variables for the snippet.

        Raises only for caller problems (bad arguments, closed pool, full queue);
        everything the snippet or the infrastructure does is in the result.
        """
        result, _ = await self._execute(code, stdin=stdin, files=files, timeout=timeout,
                                        memory_mb=memory_mb, max_output=max_output, env=env)
        return result

    async def run_tests(self, code: str, tests: str | Sequence[Any], entry_point: str | None = None,
                        timeout: float = 10.0, memory_mb: int = 256, *, compare: harness.Compare = "lines",
                        max_output: int | None = None) -> TestReport:
        """Grade the solution ``code`` against ``tests`` (formats in :mod:`toolrl_sandbox.harness`).

        The solution runs in its own process; the tests run in a separate,
        trusted grader process and reach the solution's functions only through
        plain values (see :mod:`toolrl_sandbox.grading`).  stdin/stdout tests
        run the solution once per case (each with ``timeout``; at most ``size``
        cases of one call at a time) and compare its output here, on the host,
        after :func:`harness.normalise` with ``compare``.
        """
        cases = harness.io_cases(tests)
        if cases is not None:
            harness.normalise("", compare)  # reject a bad mode before running anything
            lanes = asyncio.Semaphore(self.size)  # one call never floods the queue with its cases

            async def case(inp: str) -> ExecResult:
                async with lanes:
                    return await self.run(code, stdin=inp, timeout=timeout, memory_mb=memory_mb,
                                          max_output=max_output)

            results = await asyncio.gather(*(case(inp) for inp, _ in cases))
            return harness.io_report(results, cases, compare)
        frame = harness.tests_frame(tests, entry_point)
        result, side = await self._execute(code, stdin=None, files=None, timeout=timeout, memory_mb=memory_mb,
                                           max_output=max_output, env=None, op="grade", tests=frame)
        return harness.parse_report(result, side, frame["tests"])

    # ---------------------------------------------------------------- status
    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def live(self) -> int:
        return len(self._live)

    def container_ids(self) -> list[str]:
        return list(self._live)
