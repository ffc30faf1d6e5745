"""Training benchmark: does GRPO learn on the CPU, how long is a step, does PPO's value loss fall.

    flock /tmp/toolrl-heavy.lock .venv/bin/python benchmarks/train_bench.py            # 3 seeds x 20 GRPO steps + PPO
    .venv/bin/python benchmarks/train_bench.py --steps 2 --seeds 0 --no-ppo             # a smoke run
    .venv/bin/python benchmarks/train_bench.py --write-tasks data/format                # only the task files
    .venv/bin/python benchmarks/train_bench.py --config examples/gspo/config.yaml --steps 10 --seeds 0 --no-ppo \
        --out benchmarks/results/train_gspo.json                                        # another example's config

The task: one-shot multiplication prompts that ask for the result as `<answer>N</answer>`
(`format_tasks`); SmolLM2-135M-Instruct follows that format in about half of its
samples, so `format_answer_tag` is a learnable, binary reward (reward/mean is the
share of samples in the format; eval/accuracy the same on held-out prompts,
4 samples each at temperature 1).
The config is examples/format/config.yaml; each seed is one `toolrl.train` call (its own
local Ray instance), run directories under runs/bench/.

Reported per seed: reward/mean of the first and last 3 steps and the change, the
evaluation of the held-out file before training (step 0) and after, the mean step
time (without step 1, which warms up) and the tokens/s of rollout and update. With
PPO: loss/value at the first and last step. Writes benchmarks/results/train.json and
prints a table; records `uptime` load (figures taken under load are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "format" / "config.yaml"

SHOT = ("Compute 12 + 30.", "42")
FORM = " Reply in the form <answer>NUMBER</answer>."


def format_tasks(n: int, seed: int) -> list[dict]:
    """One-shot multiplication prompts asking for `<answer>N</answer>` (JSONL task dicts).

    SmolLM2-135M-Instruct answers in that form in about half of its samples
    (32 of 64 at temperature 1 when this was written), so there is room to learn.
    """
    rng = random.Random(f"format-{seed}")
    tasks = []
    for i in range(n):
        a, b = rng.randint(100, 9999), rng.randint(100, 999)
        messages = [{"role": "user", "content": SHOT[0] + FORM}, {"role": "assistant", "content": f"<answer>{SHOT[1]}</answer>"},
                    {"role": "user", "content": f"Compute {a} * {b}." + FORM}]
        tasks.append({"id": f"format-s{seed}-{i:05d}", "messages": messages, "tools": [], "env": None, "env_args": {},
                      "metadata": {"answer": str(a * b), "suite": "format"}})
    return tasks


def write_tasks(prefix: str, n_train: int = 256, n_eval: int = 32) -> tuple[Path, Path]:
    out = []
    for split, n, seed in (("train", n_train, 0), ("eval", n_eval, 1)):
        p = Path(f"{prefix}_{split}.jsonl")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(json.dumps(t) + "\n" for t in format_tasks(n, seed)))
        out.append(p)
    return out[0], out[1]


def _mean(xs):
    return statistics.fmean(xs) if xs else float("nan")


def run_one(name: str, overrides: list[str], config: Path = CONFIG) -> dict:
    """One `toolrl.train` call in a subprocess (a clean process and Ray instance per run)."""
    out_dir = next(o.split("=", 1)[1] for o in overrides if o.startswith("trainer.output_dir="))
    shutil.rmtree(ROOT / out_dir, ignore_errors=True)  # this benchmark's own run folder: start clean
    code = ("import json, sys, toolrl; r = toolrl.train(sys.argv[1], sys.argv[2:]); "
            "print('RESULT ' + json.dumps({'run_dir': str(r.run_dir)}))")
    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "TOOLRL_NO_ENTRYPOINTS"}  # the installed reward plugins
    proc = subprocess.run([sys.executable, "-c", code, str(config), *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"{name} failed")
    run_dir = json.loads(proc.stdout.split("RESULT ", 1)[1].splitlines()[0])["run_dir"]
    rows = [json.loads(line) for line in (ROOT / run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"name": name, "run_dir": run_dir, "wall_s": wall, "rows": rows}


def summarise(run: dict) -> dict:
    rows = [r for r in run["rows"] if r["step"] >= 1]
    evals = [r for r in run["rows"] if "eval/accuracy" in r]
    rewards = [r["reward/mean"] for r in rows if "reward/mean" in r]
    k = min(3, len(rewards))
    steps_after_warmup = rows[1:] or rows
    out = {
        "name": run["name"], "run_dir": run["run_dir"], "steps": len(rows), "wall_s": round(run["wall_s"], 1),
        "reward_curve": [round(x, 4) for x in rewards],
        "reward_step1": rewards[0] if rewards else float("nan"),  # before any update: the base rate
        "reward_first3": _mean(rewards[:k]), "reward_last3": _mean(rewards[-k:]),
        "step_s": _mean([r["timing/step"] for r in steps_after_warmup]),
        "rollout_s": _mean([r["timing/rollout"] for r in steps_after_warmup]),
        "update_s": _mean([r["timing/update"] for r in steps_after_warmup]),
        "rollout_tokens_per_s": _mean([r["timing/rollout_tokens_per_s"] for r in steps_after_warmup]),
        "update_tokens_per_s": _mean([r["timing/update_tokens_per_s"] for r in steps_after_warmup]),
    }
    out["reward_delta"] = out["reward_last3"] - out["reward_first3"]
    if evals:
        out["eval_before"] = {k2: evals[0][k2] for k2 in ("eval/reward_mean", "eval/accuracy") if k2 in evals[0]}
        out["eval_after"] = {k2: evals[-1][k2] for k2 in ("eval/reward_mean", "eval/accuracy") if k2 in evals[-1]}
    if any("loss/value" in r for r in rows):
        vl = [r["loss/value"] for r in rows if "loss/value" in r]
        out["value_loss_curve"] = [round(x, 5) for x in vl]
        out["value_loss_first3"], out["value_loss_last3"] = _mean(vl[:3]), _mean(vl[-3:])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--no-ppo", action="store_true")
    ap.add_argument("--config", default=str(CONFIG),
                    help="the run's config (default examples/format/config.yaml); its algorithm is kept, the tasks, "
                         "steps, seed and output folder are this benchmark's")
    ap.add_argument("--write-tasks", metavar="PREFIX", help="only write PREFIX_train.jsonl and PREFIX_eval.jsonl")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train.json"))
    ap.add_argument("--runs", default="runs/bench", help="parent folder of the run directories")
    args = ap.parse_args(argv)
    if args.write_tasks:
        for p in write_tasks(args.write_tasks):
            print(f"wrote {p}")
        return 0
    config = Path(args.config).resolve()
    if not config.is_file():
        raise SystemExit(f"train_bench: --config {args.config} does not exist (e.g. examples/gspo/config.yaml)")
    label = config.parent.name  # the example's folder: format, gspo, ...
    train_file, eval_file = write_tasks(str(ROOT / args.runs / "data" / "format"))
    load_before = os.getloadavg()
    common = [f"data.train_file={train_file}", f"data.eval_file={eval_file}", f"trainer.total_steps={args.steps}",
              f"trainer.eval_freq={args.steps}", "trainer.save_freq=0", "trainer.metric_sinks=[jsonl,csv,tensorboard]"]
    # another example's runs use its own algorithm, not GRPO: named for the example, kept under "runs"
    key, name = ("grpo", "grpo") if label == "format" else ("runs", label)
    results = {key: [], "ppo": None}
    for seed in [int(s) for s in args.seeds.split(",") if s != ""]:
        run = run_one(f"{name}-seed{seed}", common + [f"trainer.seed={seed}", f"trainer.output_dir={args.runs}/{name}-s{seed}"],
                      config)
        results[key].append(summarise(run))
        print(json.dumps({k: v for k, v in results[key][-1].items() if k != "reward_curve"}), flush=True)
    if not args.no_ppo:
        run = run_one("ppo-seed0", common + ["algorithm.advantage=ppo", "algorithm.kl_coef=0.01", "trainer.ppo_epochs=2",
                                             "trainer.mini_batch_size=8", "trainer.critic_lr=2e-5", "trainer.seed=0",
                                             f"trainer.output_dir={args.runs}/ppo-s0"], config)
        results["ppo"] = summarise(run)
    grpo = results[key]
    results["summary"] = {
        "reward_step1_mean": _mean([r["reward_step1"] for r in grpo]),
        "reward_first3_mean": _mean([r["reward_first3"] for r in grpo]),
        "reward_last3_mean": _mean([r["reward_last3"] for r in grpo]),
        "reward_delta_mean": _mean([r["reward_delta"] for r in grpo]),
        "reward_delta_min": min((r["reward_delta"] for r in grpo), default=float("nan")),
        "step_s_mean": _mean([r["step_s"] for r in grpo]),
    }
    results["env"] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "config": str(config.relative_to(ROOT)) if config.is_relative_to(ROOT) else str(config),
        "steps": args.steps, "seeds": args.seeds, "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    _table(results)
    print(f"wrote {out}")
    return 0


def _table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{results['env']['config']} ({results['env']['steps']} steps) — load {results['env']['uptime']}")
    for col in ("run", "reward step 1", "reward first 3", "reward last 3", "eval acc before", "eval acc after",
                "s/step", "rollout tok/s", "update tok/s"):
        t.add_column(col, justify="right")
    rows = results.get("grpo", results.get("runs", [])) + ([results["ppo"]] if results["ppo"] else [])
    for r in rows:
        before = r.get("eval_before", {}).get("eval/accuracy")
        after = r.get("eval_after", {}).get("eval/accuracy")
        t.add_row(r["name"], f"{r['reward_step1']:.3f}", f"{r['reward_first3']:.3f}", f"{r['reward_last3']:.3f}",
                  "-" if before is None else f"{before:.3f}", "-" if after is None else f"{after:.3f}",
                  f"{r['step_s']:.1f}", f"{r['rollout_tokens_per_s']:.0f}", f"{r['update_tokens_per_s']:.0f}")
    Console().print(t)
    if results["ppo"] and "value_loss_first3" in results["ppo"]:
        p = results["ppo"]
        Console().print(f"PPO value loss: first 3 steps {p['value_loss_first3']:.4f} -> last 3 steps "
                        f"{p['value_loss_last3']:.4f}", highlight=False)


if __name__ == "__main__":
    raise SystemExit(main())
