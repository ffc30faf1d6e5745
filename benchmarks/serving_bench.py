#!/usr/bin/env python3
"""Serving benchmark: toolrl's server (shared continuous-batching engine) versus the naive per-request
FastAPI server of seed 002 (benchmarks/naive_server.py), side by side in one run.

    flock /tmp/toolrl-bench.lock .venv/bin/python benchmarks/serving_bench.py
    .venv/bin/python benchmarks/serving_bench.py --users 1 8 --duration 10 --max-tokens 16   # quick look

Same model (SmolLM2-135M-Instruct, float32), same prompts (raw text, greedy), same max_tokens, same
torch thread count. For each server and each concurrency level, N closed-loop clients send requests
back to back for --duration seconds (requests in flight then finish and count). Reports requests/s,
generated tokens/s and p50/p99 latency, prints a table and writes benchmarks/results/serving_bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from toolrl_serving.process import ServerProcess, free_port, start_server

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "serving_bench.json"
MODEL = "smollm2-135m-instruct"
PROMPTS = [
    "Once upon a time, in a small village by the sea, there lived",
    "The history of the printing press begins in",
    "Here is a recipe for a simple tomato soup. First,",
    "In the year 2150, the first colony on Mars",
    "The most important thing to know about learning to program is",
    "Dear diary, today something strange happened at school:",
    "The old lighthouse keeper looked out at the storm and",
    "Photosynthesis is the process by which plants",
]


def start_naive(threads: int, log: Path) -> ServerProcess:
    port = free_port()
    env = {**os.environ, "TOOLRL_NAIVE_MODEL": MODEL, "TOOLRL_NAIVE_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "uvicorn", "naive_server:app", "--app-dir", str(ROOT), "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"naive server exited:\n{server.log_text()}")
        try:
            if httpx.get(server.base_url + "/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError("naive server did not start")


class Target:
    """How to send one request to a server and read how many tokens it generated."""

    def __init__(self, name: str, base_url: str, max_tokens: int):
        self.name, self.base_url, self.max_tokens = name, base_url, max_tokens

    async def call(self, client: httpx.AsyncClient, prompt: str) -> int:
        if self.name == "naive":
            r = await client.post(self.base_url + "/generate",
                                  params={"prompt": prompt, "max_new_tokens": self.max_tokens})
            r.raise_for_status()
            return int(r.json()["completion_tokens"])
        r = await client.post(self.base_url + "/v1/completions", json={
            "model": MODEL, "prompt": prompt, "max_tokens": self.max_tokens, "temperature": 0})
        r.raise_for_status()
        return int(r.json()["usage"]["completion_tokens"])


async def run_level(target: Target, users: int, duration: float) -> dict[str, Any]:
    latencies: list[float] = []
    tokens: list[int] = []
    errors = 0
    limits = httpx.Limits(max_connections=users + 4, max_keepalive_connections=users + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(1800.0), limits=limits) as client:
        t0 = time.perf_counter()
        stop_at = t0 + duration

        async def user(u: int) -> None:
            nonlocal errors
            i = u
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                try:
                    tokens.append(await target.call(client, PROMPTS[i % len(PROMPTS)]))
                    latencies.append(time.perf_counter() - start)
                except httpx.HTTPError:
                    errors += 1
                i += users

        await asyncio.gather(*(user(u) for u in range(users)))
        wall = time.perf_counter() - t0
    qs = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return {
        "server": target.name, "users": users, "requests": len(latencies), "errors": errors,
        "wall_s": round(wall, 2), "rps": round(len(latencies) / wall, 3),
        "tokens_per_s": round(sum(tokens) / wall, 1),
        "mean_completion_tokens": round(sum(tokens) / max(1, len(tokens)), 1),
        "p50_ms": round(1000 * qs[49], 1), "p99_ms": round(1000 * qs[98], 1),
    }


def engine_counters(base_url: str) -> dict[str, float]:
    """The hf engine's counters from /metrics (toolrl server only)."""
    out = {}
    for line in httpx.get(base_url + "/metrics", timeout=10).text.splitlines():
        for key in ("generated_tokens", "decode_steps", "prefill_tokens"):
            if line.startswith(f"toolrl_serving_engine_{key} "):
                out[key] = float(line.split()[-1])
    return out


async def bench(target: Target, levels: list[int], duration: float) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=600) as c:  # warm-up: first-call costs stay out of the figures
        for p in PROMPTS[:2]:
            await target.call(c, p)
    rows = []
    for users in levels:
        before = engine_counters(target.base_url) if target.name == "toolrl" else {}
        row = await run_level(target, users, duration)
        if before:
            after = engine_counters(target.base_url)
            steps = after["decode_steps"] - before["decode_steps"]
            # tokens per decode step: how full the batches were (prefill-sampled tokens included)
            row["mean_batch"] = round((after["generated_tokens"] - before["generated_tokens"]) / max(1.0, steps), 2)
        print(f"  {row['server']:>6} {users:>3} users: {row['rps']:.2f} req/s, {row['tokens_per_s']:.0f} tok/s, "
              f"p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms ({row['requests']} requests"
              + (f", mean batch {row['mean_batch']}" if "mean_batch" in row else "") + ")", flush=True)
        rows.append(row)
    return rows


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def table(rows: list[dict[str, Any]], levels: list[int]) -> str:
    by = {(r["server"], r["users"]): r for r in rows}
    lines = ["| users | toolrl RPS | naive RPS | RPS ratio | toolrl tok/s | naive tok/s | toolrl p50 / p99 ms | "
             "naive p50 / p99 ms |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for u in levels:
        a, b = by.get(("toolrl", u)), by.get(("naive", u))
        if not a or not b:
            continue
        ratio = a["rps"] / b["rps"] if b["rps"] else float("inf")
        lines.append(f"| {u} | {a['rps']:.2f} | {b['rps']:.2f} | {ratio:.1f}x | {a['tokens_per_s']:.0f} | "
                     f"{b['tokens_per_s']:.0f} | {a['p50_ms']:.0f} / {a['p99_ms']:.0f} | "
                     f"{b['p50_ms']:.0f} / {b['p99_ms']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load per level and server")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads in each server")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    out: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.python_version()}",
        "load_before": _load(), "model": MODEL, "max_tokens": args.max_tokens, "threads": args.threads,
        "max_batch_size": args.max_batch_size, "duration_s": args.duration, "levels": args.users,
    }
    print(f"serving bench: load {out['load_before']}, {args.threads} torch threads per server", flush=True)
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    rows: list[dict[str, Any]] = []
    server = start_server(MODEL, "--served-model-name", MODEL, "--log-level", "warning", "--max-batch-size",
                          str(args.max_batch_size), "--max-tokens", str(args.max_tokens), "--max-queue", "1024",
                          "--num-threads", str(args.threads), log=logs / "serving_bench_toolrl.log")
    try:
        rows += asyncio.run(bench(Target("toolrl", server.base_url, args.max_tokens), args.users, args.duration))
    finally:
        server.stop()
    naive = start_naive(args.threads, logs / "serving_bench_naive.log")
    try:
        rows += asyncio.run(bench(Target("naive", naive.base_url, args.max_tokens), args.users, args.duration))
    finally:
        naive.stop()
    out["load_after"] = _load()
    out["results"] = rows
    by = {(r["server"], r["users"]): r for r in rows}
    out["rps_ratio"] = {str(u): round(by[("toolrl", u)]["rps"] / by[("naive", u)]["rps"], 2)
                        for u in args.users if by[("naive", u)]["rps"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print()
    print(table(rows, args.users))
    print(f"\nload before {out['load_before']}, after {out['load_after']}; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
