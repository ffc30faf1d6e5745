"""Ray placements on one machine: step time colocated vs separate engines, and the weight sync's cost.

    flock /tmp/toolrl-heavy.lock .venv/bin/python benchmarks/scaling_bench.py              # 3 steps each
    .venv/bin/python benchmarks/scaling_bench.py --steps 2 --placements separate           # one placement

Each placement is one `toolrl.train` call on SmolLM2-135M-Instruct (float32, CPU) with the
integration tests' tiny GRPO config: 2 prompts x 2 samples, 8 new tokens, 1 turn. `colocated`: one
policy rank that also samples; `separate`: the policy rank plus `--replicas` hf engine actors
(1 CPU each), which get the full state dict through Ray's object store after every update.

Reported per placement: mean step time, rollout, update and weight-sync seconds (without step 1,
which warms up), the bytes of one sync and the slowest replica's load time. Writes
benchmarks/results/scaling.json and prints a table; records the machine's load (figures taken
under load are noisy).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


_SUPPORT: dict = {}


def _support():
    """The tests' config helpers, loaded once (their reward plugin is registered once per process)."""
    if not _SUPPORT:
        spec = importlib.util.spec_from_file_location("train_support", ROOT / "tests/support/train_support.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _SUPPORT.update(module=mod, plugin=mod.AnswerTagPlugin())
    return _SUPPORT["module"], _SUPPORT["plugin"]


def run(placement: str, steps: int, replicas: int, out: Path) -> dict:
    import toolrl

    S, plugin = _support()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    extra = {"rollout": {"placement": placement, "replicas": replicas}} if placement == "separate" else {}
    cpus = 1 + (replicas if placement == "separate" else 0)
    cfg = S.base_config(out, trainer={"total_steps": steps}, ray={"num_cpus": cpus, "torch_threads": 1}, **extra)
    t0 = time.perf_counter()
    result = toolrl.train(cfg, plugins=[plugin])
    wall = time.perf_counter() - t0
    rows = S.read_metrics(result.run_dir)
    timed = rows[1:] or rows

    def mean(key: str) -> float | None:
        vals = [r[key] for r in timed if key in r]
        return round(statistics.mean(vals), 3) if vals else None

    return {
        "placement": placement, "replicas": replicas if placement == "separate" else 0, "steps": steps,
        "wall_seconds": round(wall, 1), "step_seconds": mean("timing/step"), "rollout_seconds": mean("timing/rollout"),
        "update_seconds": mean("timing/update"), "sync_seconds": mean("timing/sync"),
        "sync_load_seconds_max": mean("timing/sync/load_seconds_max"), "sync_bytes": mean("sync/bytes"),
        "weight_lag": [r.get("rollout/weight_lag") for r in rows],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--placements", nargs="+", default=["colocated", "separate"], choices=["colocated", "separate"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/scaling.json"))
    args = ap.parse_args()
    results = []
    for placement in args.placements:
        load = os.getloadavg()[0]
        res = run(placement, args.steps, args.replicas, ROOT / "runs/bench/scaling" / placement)
        res["load_before"] = round(load, 2)
        results.append(res)
    doc = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
           "model": "smollm2-135m-instruct float32", "batch": "2 prompts x 2 samples, 8 new tokens",
           "command": "python benchmarks/scaling_bench.py " + " ".join(sys.argv[1:]), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    cols = ["placement", "replicas", "step_seconds", "rollout_seconds", "update_seconds", "sync_seconds",
            "sync_load_seconds_max", "sync_bytes", "load_before"]
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
