"""Latency/throughput measurements shared by ``toolrl-sandbox bench`` and
``benchmarks/sandbox_bench.py``.

Four ways to run a snippet are compared, all with the same hardening flags:
``docker run --rm`` per snippet, ``docker exec`` per snippet in one running
container, and the pool in ``reuse`` and ``fresh`` mode.  Latency is measured
at the host, from request to result; throughput is completed snippets per
second of wall time with ``concurrency`` callers busy.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import docker

from . import engine
from .image import default_image
from .pool import SandboxPool

TRIVIAL = "print(1 + 1)"


@dataclass(frozen=True)
class Row:
    method: str
    snippet: str
    concurrency: int
    n: int
    ok: int
    p50_ms: float
    p95_ms: float
    per_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[idx]


def _row(method: str, snippet: str, concurrency: int, lat: list[float], oks: int, wall: float) -> Row:
    return Row(method, snippet, concurrency, len(lat), oks, round(percentile(lat, 0.5), 2),
               round(percentile(lat, 0.95), 2), round(len(lat) / wall, 1) if wall > 0 else 0.0)


async def measure_async(call: Callable[[], Awaitable[bool]], n: int, concurrency: int) -> tuple[list[float], int, float]:
    """Run ``call`` ``n`` times with ``concurrency`` workers; latencies in ms, ok count, wall s."""
    lat: list[float] = []
    oks = 0
    todo = iter(range(n))

    async def worker() -> None:
        nonlocal oks
        for _ in todo:
            t0 = time.perf_counter()
            ok = await call()
            lat.append((time.perf_counter() - t0) * 1000.0)
            oks += bool(ok)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lat, oks, time.perf_counter() - t0


def measure_threads(call: Callable[[], bool], n: int, concurrency: int) -> tuple[list[float], int, float]:
    lat: list[float] = []
    oks = 0
    lock = threading.Lock()

    def one(_: int) -> None:
        nonlocal oks
        t0 = time.perf_counter()
        ok = call()
        with lock:
            lat.append((time.perf_counter() - t0) * 1000.0)
            oks += bool(ok)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(one, range(n)))
    return lat, oks, time.perf_counter() - t0


def _baseline_kwargs(client: docker.DockerClient, image: str, tag: str) -> dict[str, Any]:
    """The pool's hardening, for the one-shot baselines (json-file logs so output can be read)."""
    return dict(
        image=image, entrypoint="python3", user=f"{engine.SANDBOX_UID}:{engine.SANDBOX_UID}",
        network_mode="none", cap_drop=["ALL"], security_opt=["no-new-privileges:true"], read_only=True,
        tmpfs={engine.WORKDIR: f"rw,nosuid,nodev,noexec,uid={engine.SANDBOX_UID},size=64m"},
        pids_limit=64, mem_limit="512m", nano_cpus=10**9, labels={engine.LABEL_POOL: f"bench-{tag}"},
    )


def bench_docker_run(client: docker.DockerClient, image: str, code: str, expect: str, n: int,
                     concurrency: int, label: str) -> Row:
    kwargs = _baseline_kwargs(client, image, "run")

    def call() -> bool:
        out = client.containers.run(command=["-c", code], remove=True, **kwargs)
        return out.decode().strip() == expect

    lat, oks, wall = measure_threads(call, n, concurrency)
    return _row("docker run --rm", label, concurrency, lat, oks, wall)


def bench_docker_exec(client: docker.DockerClient, image: str, code: str, expect: str, n: int,
                      concurrency: int, label: str) -> Row:
    kwargs = _baseline_kwargs(client, image, "exec")
    kwargs["entrypoint"] = ["sleep", "infinity"]
    container = client.containers.run(detach=True, **kwargs)
    try:
        def call() -> bool:
            res = container.exec_run(["python3", "-c", code], workdir=engine.WORKDIR)
            return res.exit_code == 0 and res.output.decode().strip() == expect

        call()  # warm-up
        lat, oks, wall = measure_threads(call, n, concurrency)
    finally:
        container.remove(force=True)
    return _row("docker exec", label, concurrency, lat, oks, wall)


async def bench_pool(pool: SandboxPool, code: str, expect: str, n: int, concurrency: int, label: str,
                     warmup: int = 5) -> Row:
    async def call() -> bool:
        r = await pool.run(code, timeout=10.0)
        return r.status == "ok" and r.stdout.strip() == expect

    if pool.mode == "reuse":
        for _ in range(warmup):
            await call()
    lat, oks, wall = await measure_async(call, n, concurrency)
    return _row(f"pool {pool.mode} x{pool.size}", label, concurrency, lat, oks, wall)


def reuse_sizes() -> tuple[int, ...]:
    """Reuse pools measured: one container per core (the fastest here) and 8."""
    cores = os.cpu_count() or 2
    return (cores, 8) if cores < 8 else (8,)


async def quick(image: str | None = None, n: int = 200, fresh_n: int = 24, fresh_size: int = 8) -> list[Row]:
    """The quick benchmark of ``toolrl-sandbox bench``: trivial snippet, pool modes only."""
    rows: list[Row] = []
    image = image or default_image()
    for size in reuse_sizes():
        async with SandboxPool(size=size, mode="reuse", image=image) as pool:
            for c in (1, 8):
                rows.append(await bench_pool(pool, TRIVIAL, "2", n, c, "trivial"))
    for c in (1, 8):
        async with SandboxPool(size=fresh_size, mode="fresh", image=image) as pool:
            rows.append(await bench_pool(pool, TRIVIAL, "2", fresh_n, c, "trivial"))
    return rows


def render(rows: list[Row], title: str = "toolrl-sandbox benchmark") -> str:
    """A table as text; uses rich when it is installed."""
    headers = ["method", "snippet", "conc", "n", "ok", "p50 ms", "p95 ms", "snippets/s"]
    cells = [[r.method, r.snippet, str(r.concurrency), str(r.n), str(r.ok), f"{r.p50_ms:.1f}",
              f"{r.p95_ms:.1f}", f"{r.per_s:.1f}"] for r in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
        lines = [title, "  ".join(h.ljust(w) for h, w in zip(headers, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)
    table = Table(title=title)
    for h in headers:
        table.add_column(h, justify="left" if h in ("method", "snippet") else "right")
    for row in cells:
        table.add_row(*row)
    buf = io.StringIO()
    Console(file=buf, width=110).print(table)
    return buf.getvalue().rstrip("\n")


def markdown(rows: list[Row]) -> str:
    out = ["| method | snippet | concurrency | n | ok | p50 ms | p95 ms | snippets/s |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r.method} | {r.snippet} | {r.concurrency} | {r.n} | {r.ok} | {r.p50_ms:.1f} | "
                   f"{r.p95_ms:.1f} | {r.per_s:.1f} |")
    return "\n".join(out)
