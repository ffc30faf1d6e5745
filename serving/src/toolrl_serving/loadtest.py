"""`make loadtest`: start a server, run locust headless against it on loopback, write the results.

    python -m toolrl_serving.loadtest [--model M] [--users 32] [--spawn-rate 8] [--run-time 60s] ...

Writes, under --out (benchmarks/results): `locust_<tag>_stats.csv` (+ `_stats_history.csv`,
`_failures.csv`, `_exceptions.csv`, locust's own files), `locust_<tag>_rss.csv` (server RSS every few
seconds) and `locust_<tag>_summary.json` / `.md` (RPS, p50/p95/p99, unexpected failures, expected
4xx count, server RSS at start/end and its slope). Exit status 1 when a request failed unexpectedly.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from toolrl_serving.process import start_server

MALFORMED_PREFIX = "malformed:"


class RssSampler(threading.Thread):
    """Samples a process's resident memory (RSS, MiB) every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 5.0):
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._halt = threading.Event()
        self.t0 = time.monotonic()

    def sample(self) -> float:
        rss = self.proc.memory_info().rss / 2**20
        self.samples.append((time.monotonic() - self.t0, rss))
        return rss

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self.sample()
            except Exception:  # the process went away
                return

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=self.interval + 1)


def slope_mib_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS over time."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    return 60 * sum((t - mt) * (r - mr) for t, r in samples) / var


def _float(row: dict[str, str], key: str) -> float:
    try:
        return float(row.get(key) or 0)
    except ValueError:
        return 0.0


def summarise(stats_csv: Path) -> dict[str, Any]:
    """Totals from locust's stats CSV: expected 4xx (malformed: ...) apart from the real traffic."""
    rows = list(csv.DictReader(stats_csv.open()))
    per_name = {r["Name"]: r for r in rows if r["Name"] != "Aggregated"}
    agg = next((r for r in rows if r["Name"] == "Aggregated"), {})
    real = {k: v for k, v in per_name.items() if not k.startswith(MALFORMED_PREFIX)}
    malformed = {k: v for k, v in per_name.items() if k.startswith(MALFORMED_PREFIX)}
    return {
        "requests": int(_float(agg, "Request Count")),
        "rps": round(_float(agg, "Requests/s"), 3),
        "unexpected_failures": int(sum(_float(r, "Failure Count") for r in per_name.values())),
        "expected_4xx": int(sum(_float(r, "Request Count") - _float(r, "Failure Count") for r in malformed.values())),
        "latency_ms": {"p50": _float(agg, "50%"), "p95": _float(agg, "95%"), "p99": _float(agg, "99%"),
                       "max": _float(agg, "Max Response Time")},
        "by_name": {k: {"requests": int(_float(v, "Request Count")), "failures": int(_float(v, "Failure Count")),
                        "rps": round(_float(v, "Requests/s"), 3), "p50_ms": _float(v, "50%"),
                        "p95_ms": _float(v, "95%"), "p99_ms": _float(v, "99%")} for k, v in real.items()},
    }


def _markdown(s: dict[str, Any]) -> str:
    lat = s["latency_ms"]
    lines = [
        f"# Locust load test: {s['users']} users, {s['run_time']}",
        "",
        f"Command: `{s['command']}`  ",
        f"Model: {s['model']}, max_tokens {s['max_tokens']}, max batch {s['max_batch_size']}, "
        f"torch threads {s['num_threads']}  ",
        f"Machine: {s['machine']}, load before: {s['load_before']}, after: {s['load_after']}",
        "",
        "| requests | RPS | p50 ms | p95 ms | p99 ms | unexpected failures | expected 4xx | RSS start MiB | "
        "RSS end MiB | RSS after warm-up min / max MiB | RSS slope MiB/min |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {s['requests']} | {s['rps']} | {lat['p50']:.0f} | {lat['p95']:.0f} | {lat['p99']:.0f} | "
        f"{s['unexpected_failures']} | {s['expected_4xx']} | {s['rss_mib']['start']:.0f} | {s['rss_mib']['end']:.0f} | "
        f"{s['rss_mib']['after_warmup_min']:.0f} / {s['rss_mib']['after_warmup_max']:.0f} | "
        f"{s['rss_mib']['slope_per_min_after_warmup']:.2f} |",
        "",
        "| request | count | failures | RPS | p50 ms | p95 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in s["by_name"].items():
        lines.append(f"| {name} | {r['requests']} | {r['failures']} | {r['rps']} | {r['p50_ms']:.0f} | "
                     f"{r['p95_ms']:.0f} | {r['p99_ms']:.0f} |")
    return "\n".join(lines) + "\n"


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    ap = argparse.ArgumentParser(prog="python -m toolrl_serving.loadtest", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=env("LOADTEST_MODEL", "smollm2-135m-instruct"))
    ap.add_argument("--users", type=int, default=int(env("LOADTEST_USERS", "32")))
    ap.add_argument("--spawn-rate", type=float, default=float(env("LOADTEST_SPAWN_RATE", "8")))
    ap.add_argument("--run-time", default=env("LOADTEST_RUN_TIME", "60s"), help="locust --run-time (e.g. 60s, 10m)")
    ap.add_argument("--max-tokens", type=int, default=int(env("LOADTEST_MAX_TOKENS", "32")))
    ap.add_argument("--max-batch-size", type=int, default=int(env("LOADTEST_MAX_BATCH_SIZE", "32")))
    ap.add_argument("--num-threads", type=int, default=int(env("LOADTEST_NUM_THREADS", "0")) or None,
                    help="torch threads in the server (default: torch's; 1 on a machine busy with other work)")
    ap.add_argument("--out", default=env("LOADTEST_OUT", "benchmarks/results"))
    ap.add_argument("--tag", default=env("LOADTEST_TAG", ""), help="file name part (default: <users>u_<run-time>)")
    ap.add_argument("--rss-interval", type=float, default=5.0)
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.tag or f"{args.users}u_{args.run_time}"
    prefix = out / f"locust_{tag}"
    key = "loadtest-" + os.urandom(8).hex()
    locustfile = Path(__file__).resolve().parents[2] / "locustfile.py"
    if not locustfile.exists():
        raise SystemExit(f"locustfile not found at {locustfile}; run from a checkout of toolrl")

    load_before = _load()
    print(f"[loadtest] starting the server for {args.model} (load {load_before})", flush=True)
    threads = ["--num-threads", str(args.num_threads)] if args.num_threads else []
    server = start_server(args.model, "--served-model-name", args.model, "--log-level", "warning",
                          "--max-batch-size", str(args.max_batch_size), "--max-tokens", str(max(args.max_tokens, 64)),
                          "--max-queue", str(max(256, 4 * args.users)), "--api-key-env", "TOOLRL_LOADTEST_SERVER_KEY",
                          *threads, env={"TOOLRL_LOADTEST_SERVER_KEY": key}, log=f"{prefix}_server.log")
    sampler = RssSampler(server.pid, args.rss_interval)
    try:
        rss_start = sampler.sample()
        sampler.start()
        cmd = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", str(args.users),
               "-r", str(args.spawn_rate), "-t", args.run_time, "-H", server.base_url, "--csv", str(prefix),
               "--only-summary", "--stop-timeout", "30", "--loglevel", "WARNING"]
        locust_env = {**os.environ, "TOOLRL_LOADTEST_MODEL": args.model, "TOOLRL_LOADTEST_API_KEY": key,
                      "TOOLRL_LOADTEST_MAX_TOKENS": str(args.max_tokens)}
        print(f"[loadtest] {' '.join(cmd)}", flush=True)
        t0 = time.monotonic()
        rc = subprocess.run(cmd, env=locust_env).returncode
        wall = time.monotonic() - t0
        rss_end = sampler.sample()
    finally:
        try:
            sampler.stop()
        finally:
            server.stop()
    with open(f"{prefix}_rss.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["seconds", "rss_mib"])
        w.writerows((round(t, 1), round(r, 1)) for t, r in sampler.samples)
    warm = [(t, r) for t, r in sampler.samples if t >= min(60.0, wall / 5)]
    summary = summarise(Path(f"{prefix}_stats.csv"))
    summary.update({
        "users": args.users, "run_time": args.run_time, "wall_s": round(wall, 1), "model": args.model,
        "max_tokens": args.max_tokens, "max_batch_size": args.max_batch_size, "locust_exit": rc,
        "num_threads": args.num_threads or "torch default",
        "command": " ".join(["python -m toolrl_serving.loadtest", *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus", "load_before": load_before,
        "load_after": _load(),
        "rss_mib": {"start": round(rss_start, 1), "end": round(rss_end, 1),
                    "max": round(max(r for _, r in sampler.samples), 1),
                    "slope_per_min_after_warmup": round(slope_mib_per_min(warm), 3),
                    "after_warmup_min": round(min((r for _, r in warm), default=rss_end), 1),
                    "after_warmup_max": round(max((r for _, r in warm), default=rss_end), 1)},
    })
    Path(f"{prefix}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    Path(f"{prefix}_summary.md").write_text(_markdown(summary))
    print(_markdown(summary))
    print(f"[loadtest] results in {prefix}_*", flush=True)
    return 1 if summary["unexpected_failures"] or summary["requests"] == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
