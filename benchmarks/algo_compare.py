"""Issue 14's comparison: SFT, DPO, GRPO, DAPO, GSPO and SFT-then-GRPO from one base, one budget of episodes.

    flock -n /tmp/toolrl-heavy.lock true  # (the script takes the heavy lock itself, one unit at a time)
    .venv/bin/python benchmarks/algo_compare.py run --seeds 0                 # base eval, data, six algorithms
    .venv/bin/python benchmarks/algo_compare.py run --seeds 1 2 --max-minutes 30   # more seeds, in chunks
    .venv/bin/python benchmarks/algo_compare.py table                          # the table from the result file
    .venv/bin/python benchmarks/algo_compare.py plan --seeds 0                 # the commands, nothing run

The task is the demo's (`examples/demo/config.yaml`): `arith-tool` easy, Qwen2.5-Coder-0.5B-Instruct,
LoRA rank 16, at most 2 turns of 48 tokens, reward `math_equiv` + 0.2 `format_tool_call`. Every
algorithm starts from the same base and may sample `--budget` episodes (default 48) of the base
config's rollout on the same `budget / n` training tasks (seed 1000 + seed):

- grpo: `budget / (n * prompts)` steps of `prompts` prompts x `n` samples (the demo: 4 x 3 x 4 = 48).
- dapo: clip-higher 0.28, token-mean, overlong shaping, dynamic sampling with at most 2 rounds per
  step; steps = budget / (2 rounds x prompts x n), so even when every round is drawn the budget holds
  (the episodes actually drawn are counted from `rollout/dynamic_sampling_draws`).
- gspo: as grpo with the sequence-level ratio (3e-4 / 4e-4, seq-mean) and mini-batches of one group,
  so the policy moves within a batch.
- sft / dpo: the base model's own episodes (one sampling pass of `n` per task over the same tasks,
  through `toolrl.trainer.offline_data`, the code of `toolrl data sft` / `toolrl data dpo`):
  rejection sampling (best correct per task) for SFT, best/worst pairs for DPO, `--epochs` passes.
- sft_grpo: SFT on the first half of the tasks' episodes (budget / 2), then GRPO for budget / 2
  episodes on the other half of the tasks, from the SFT checkpoint (merged).

Each is evaluated greedily on the same held-out file (`--heldout` tasks, seed 7, the demo's), as is
the base once. Units (base eval, a seed's data, each (algorithm, seed)) are resumable: a finished
unit is recorded in `benchmarks/results/algo_compare/results.json` and skipped next time; each unit
holds the heavy lock (`--lock`) while it runs, so other jobs interleave between units.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = "examples/demo/config.yaml"
MODEL = "qwen2.5-coder-0.5b-instruct"
RESULTS = ROOT / "benchmarks" / "results" / "algo_compare"
WORK = ROOT / "runs" / "algo_compare"
TOOLRL = str(ROOT / ".venv" / "bin" / "toolrl")
ALGOS = ("sft", "dpo", "grpo", "dapo", "gspo", "sft_grpo")
DAPO_ROUNDS = 2

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# pure parts: the budget plan, episode counting, the result store, the table rows (tests/unit/test_algo_compare.py)

@dataclass(frozen=True)
class Budget:
    """How a budget of sampled episodes is spent: `episodes` = tasks x n = rl_steps x prompts x n."""

    episodes: int
    n: int
    prompts: int

    def __post_init__(self) -> None:
        if self.n < 2 or self.prompts < 1:
            raise ValueError(f"n must be >= 2 (groups) and prompts >= 1, got n={self.n} prompts={self.prompts}")
        unit = DAPO_ROUNDS * self.n * self.prompts  # DAPO's worst case per step; also two GRPO halves
        if self.episodes < unit or self.episodes % unit:
            raise ValueError(f"budget {self.episodes} must be a positive multiple of {DAPO_ROUNDS} x n x prompts = "
                             f"{unit}, so GRPO, DAPO (at most {DAPO_ROUNDS} rounds a step) and the two halves of "
                             "SFT-then-GRPO spend it exactly")

    @property
    def tasks(self) -> int:
        return self.episodes // self.n

    @property
    def rl_steps(self) -> int:
        return self.episodes // (self.n * self.prompts)

    @property
    def dapo_steps(self) -> int:
        return self.episodes // (DAPO_ROUNDS * self.n * self.prompts)

    @property
    def half_tasks(self) -> int:
        return self.tasks // 2

    @property
    def half_rl_steps(self) -> int:
        return self.rl_steps // 2


def offline_plan(examples: int, epochs: int, per_step: int = 4) -> tuple[int, int]:
    """(examples per step, steps) for `epochs` passes over `examples` SFT conversations or DPO pairs."""
    if examples < 1:
        raise ValueError("no examples to train on")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    pps = min(per_step, examples)
    return pps, math.ceil(epochs * examples / pps)


def episodes_drawn(rows: Sequence[Mapping[str, float]], n: int, prompts: int) -> int:
    """Episodes a run sampled, from its metrics rows: one round per step, or `rollout/dynamic_sampling_draws`."""
    return sum(int(r.get("rollout/dynamic_sampling_draws", 1)) * n * prompts for r in rows)


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value)."""
    if not values:
        raise ValueError("no values")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def unit_key(algo: str, seed: int | None = None) -> str:
    return algo if seed is None else f"{algo}/seed{seed}"


@dataclass
class Store:
    """The result file: finished units by key, written atomically after each unit."""

    path: Path
    units: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Store:
        if not path.exists():
            return cls(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(path, dict(data.get("units", {})), dict(data.get("meta", {})))

    def done(self, key: str) -> bool:
        return key in self.units

    def put(self, key: str, record: dict[str, Any]) -> None:
        self.units[key] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"meta": self.meta, "units": self.units}, indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(self.path)


def table_rows(units: Mapping[str, Mapping[str, Any]], algos: Sequence[str] = ALGOS) -> list[dict[str, Any]]:
    """One row per algorithm with finished seeds: accuracies by seed, mean, sd, and the spending figures."""
    rows = []
    base = units.get("base")
    if base:
        rows.append({"algo": "base", "seeds": {}, "acc": [base["accuracy"]], "mean": base["accuracy"], "sd": None,
                     "tool_calls": [base["tool_calls"]], "episodes": [0], "steps": [0], "train_s": [], "eval_s": [base["eval_s"]]})
    for algo in algos:
        found = sorted((int(k.split("seed")[1]), u) for k, u in units.items() if k.startswith(f"{algo}/seed"))
        if not found:
            continue
        acc = [u["accuracy"] for _, u in found]
        mean, sd = mean_sd(acc)
        rows.append({"algo": algo, "seeds": {s: u["accuracy"] for s, u in found}, "acc": acc, "mean": mean, "sd": sd,
                     "tool_calls": [u["tool_calls"] for _, u in found], "episodes": [u["episodes"] for _, u in found],
                     "steps": [u["steps"] for _, u in found], "train_s": [u["train_s"] for _, u in found],
                     "eval_s": [u["eval_s"] for _, u in found]})
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]], heldout: int) -> str:
    """The table for docs/BENCHMARKS.md."""
    seeds = sorted({s for r in rows for s in r["seeds"]})
    head = ["algorithm", *(f"seed {s}" for s in seeds), "mean", "sd", "tool calls / task", "episodes sampled",
            "training steps", "train s"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        def frac(a: float) -> str:
            return f"{a:.2f} ({round(a * heldout)}/{heldout})"
        cells = [r["algo"], *(frac(r["seeds"][s]) if s in r["seeds"] else ("" if r["algo"] != "base" else frac(r["mean"]))
                              for s in seeds)]
        cells += [f"{r['mean']:.2f}", "-" if r["sd"] is None else f"{r['sd']:.2f}",
                  " / ".join(f"{t:.2f}" for t in r["tool_calls"]), " / ".join(str(e) for e in r["episodes"]),
                  " / ".join(str(s) for s in r["steps"]), " / ".join(f"{t:.0f}" for t in r["train_s"]) or "-"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------------------
# the runs

class HeavyLock:
    """flock(2) on `path` (the lock `flock /tmp/toolrl-heavy.lock CMD` takes), held for chunks of units.

    `hold()` before a unit takes the lock if it is not held; `maybe_release()` after a unit gives it back
    once it has been held `chunk_s` seconds (0: after every unit), so other jobs interleave between chunks.
    """

    def __init__(self, path: str | None, chunk_s: float = 0.0) -> None:
        self.path, self.chunk_s = path, chunk_s
        self._fh: Any = None
        self._since = 0.0

    def hold(self) -> None:
        if not self.path or self._fh is not None:
            return
        self._fh = open(self.path, "a+")  # noqa: SIM115 (held across units)
        t0 = time.time()
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        self._since = time.time()
        if self._since - t0 > 1:
            logger.warning("waited %.0f s for %s", self._since - t0, self.path)

    def maybe_release(self, force: bool = False) -> None:
        if self._fh is not None and (force or time.time() - self._since >= self.chunk_s):
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


@dataclass
class Ctx:
    budget: Budget
    heldout: int
    epochs: int
    lr: float
    store: Store
    work: Path
    lock: str | None
    dry: bool = False
    commands: list[str] = field(default_factory=list)

    def sh(self, args: Sequence[str], log: Path | None = None) -> float:
        """Run a command (recorded for the result file); return its seconds."""
        line = " ".join(str(a) for a in args).replace(str(ROOT) + "/", "")
        self.commands.append(line)
        print(f"$ {line}", flush=True)
        if self.dry:
            return 0.0
        t0 = time.perf_counter()
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w", encoding="utf-8") as fh:
                rc = subprocess.run([str(a) for a in args], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT).returncode
        else:
            rc = subprocess.run([str(a) for a in args], cwd=ROOT).returncode
        if rc:
            tail = log.read_text(encoding="utf-8", errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"command failed (exit {rc}): {line}\n{tail}\nfull log: {log}")
        return time.perf_counter() - t0

    def heldout_file(self) -> Path:
        return self.work / "data" / f"heldout{self.heldout}.jsonl"

    def seed_dir(self, seed: int) -> Path:
        return self.work / f"seed{seed}"


def make_tasks(ctx: Ctx, n: int, seed: int, out: Path) -> None:
    if out.exists() and not ctx.dry:
        return
    ctx.sh([TOOLRL, "data", "make", "arith-tool", "--n", n, "--seed", seed, "--out", out, "difficulty=easy"])


def evaluate(ctx: Ctx, model: str, label: str, out: Path) -> dict[str, Any]:
    # algorithm.objective=rl: `toolrl eval --config` is merged over a checkpoint's training config, and an SFT/DPO
    # checkpoint's objective with the demo's data.prompts_per_step=3 fails the training-only micro-batch check
    secs = ctx.sh([TOOLRL, "eval", "--config", BASE_CONFIG, "--model", model, "--tasks", ctx.heldout_file(),
                   "--label", label, "--out", out, "algorithm.objective=rl"], log=out.with_suffix(".log"))
    if ctx.dry:
        return {}
    rep = json.loads(out.read_text(encoding="utf-8"))
    m = rep["metrics"]
    return {"accuracy": m["eval/accuracy"], "tool_calls": m.get("eval/tool_calls", float("nan")),
            "reward_mean": m.get("eval/reward_mean"), "eval_s": secs,
            "correct": sum(1 for t in rep["per_task"] if any(t["correct"]))}


def train(ctx: Ctx, out_dir: Path, overrides: Sequence[str]) -> tuple[float, list[dict[str, float]]]:
    args = [TOOLRL, "train", "--config", BASE_CONFIG, f"trainer.output_dir={out_dir}", *overrides]
    done = out_dir.parent / f"{out_dir.name}.done.json"  # a finished training whose unit failed later (its eval)
    if not ctx.dry and done.exists():
        prev = json.loads(done.read_text(encoding="utf-8"))
        if prev["args"] == [str(a) for a in args]:
            ctx.commands.append(" ".join(str(a) for a in args).replace(str(ROOT) + "/", ""))
            print(f"[reuse] {out_dir} (trained in {prev['seconds']:.0f} s)", flush=True)
            return prev["seconds"], prev["rows"]
    if out_dir.exists() and not ctx.dry:
        shutil.rmtree(out_dir)  # an interrupted training starts again (its checkpoint is only written at the end)
    secs = ctx.sh(args, log=out_dir.parent / f"{out_dir.name}.train.log")
    if ctx.dry:
        return secs, []
    rows = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    done.write_text(json.dumps({"args": [str(a) for a in args], "seconds": secs, "rows": rows}), encoding="utf-8")
    return secs, rows


def common(ctx: Ctx, seed: int, steps: int) -> list[str]:
    return [f"trainer.seed={seed}", f"trainer.total_steps={steps}", f"trainer.save_freq={steps}",
            f"trainer.lr={ctx.lr}", "trainer.keep_checkpoints=1", f"data.eval_file={ctx.heldout_file()}"]


def unit_base(ctx: Ctx) -> dict[str, Any]:
    make_tasks(ctx, ctx.heldout, 7, ctx.heldout_file())
    return evaluate(ctx, MODEL, "base", RESULTS / "base_eval.json")


def unit_data(ctx: Ctx, seed: int) -> dict[str, Any]:
    d = ctx.seed_dir(seed) / "data"
    make_tasks(ctx, ctx.budget.tasks, 1000 + seed, d / "train.jsonl")
    secs = ctx.sh([sys.executable, __file__, "sample", "--seed", str(seed), "--tasks", d / "train.jsonl",
                   "--n", str(ctx.budget.n), "--half", str(ctx.budget.half_tasks), "--out", d],
                  log=d / "sample.log")
    if ctx.dry:
        return {}
    info = json.loads((d / "sample.json").read_text(encoding="utf-8"))
    lines = (d / "train.jsonl").read_text(encoding="utf-8").splitlines()
    (d / "train_second_half.jsonl").write_text("\n".join(lines[ctx.budget.half_tasks:]) + "\n", encoding="utf-8")
    dest = RESULTS / f"seed{seed}"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("sft.jsonl", "sft_half.jsonl", "pairs.jsonl", "sample.json"):
        shutil.copy(d / name, dest / name)
    return {**info, "sample_s": secs}


def unit_algo(ctx: Ctx, algo: str, seed: int) -> dict[str, Any]:
    b, sd = ctx.budget, ctx.seed_dir(seed)
    data = ctx.store.units.get(unit_key("data", seed), {})
    d = sd / "data"
    run = sd / algo
    rl = [f"data.train_file={d / 'train.jsonl'}", f"data.prompts_per_step={b.prompts}", f"rollout.n={b.n}"]
    rec: dict[str, Any] = {}
    if algo == "grpo":
        secs, rows = train(ctx, run, [*rl, *common(ctx, seed, b.rl_steps), "model.lora.save_merged=false"])
    elif algo == "dapo":
        secs, rows = train(ctx, run, [*rl, *common(ctx, seed, b.dapo_steps), "model.lora.save_merged=false",
                                      "algorithm.clip_ratio_high=0.28", "algorithm.loss_agg=token-mean",
                                      "algorithm.dynamic_sampling=true", f"algorithm.max_sampling_draws={DAPO_ROUNDS}",
                                      "algorithm.overlong_buffer=32", "algorithm.overlong_penalty=0.5"])
        rec["draws"] = [r.get("rollout/dynamic_sampling_draws") for r in rows]
        rec["groups_kept"] = [r.get("rollout/dynamic_sampling_groups_kept") for r in rows]
    elif algo == "gspo":
        secs, rows = train(ctx, run, [*rl, *common(ctx, seed, b.rl_steps), "model.lora.save_merged=false",
                                      "algorithm.policy_loss=gspo", "algorithm.clip_ratio=3.0e-4",
                                      "algorithm.clip_ratio_high=4.0e-4", "algorithm.loss_agg=seq-mean",
                                      f"trainer.mini_batch_size={b.n}"])
        rec["clip_frac"] = [r.get("actor/clip_frac") for r in rows]
    elif algo in ("sft", "dpo", "sft_grpo"):
        name = {"sft": "sft.jsonl", "dpo": "pairs.jsonl", "sft_grpo": "sft_half.jsonl"}[algo]
        count = int(data.get({"sft": "sft_rows", "dpo": "pairs", "sft_grpo": "sft_half_rows"}[algo], 0)) if not ctx.dry else 4
        if count == 0:
            raise RuntimeError(f"{algo} seed {seed}: the base model's episodes gave no {name} rows to train on")
        pps, steps = offline_plan(count, ctx.epochs)
        objective = "dpo" if algo == "dpo" else "sft"
        off_dir = run if algo != "sft_grpo" else sd / "sft_grpo_sft"
        extra = ["algorithm.dpo_beta=0.1", "algorithm.dpo_loss=sigmoid"] if objective == "dpo" else []
        secs, rows = train(ctx, off_dir, [f"algorithm.objective={objective}", *extra, f"data.train_file={d / name}",
                                          f"data.prompts_per_step={pps}", f"trainer.micro_batch_size={pps}",
                                          *common(ctx, seed, steps),
                                          f"model.lora.save_merged={str(algo == 'sft_grpo').lower()}"])
        rec.update(examples=count, offline_steps=steps, offline_s=secs, offline_last=rows[-1] if rows else {})
        episodes = b.episodes if algo != "sft_grpo" else b.half_tasks * b.n
        if algo == "sft_grpo":
            half = [f"data.train_file={d / 'train_second_half.jsonl'}", f"data.prompts_per_step={b.prompts}",
                    f"rollout.n={b.n}", f"model.name_or_path={off_dir / 'checkpoints' / 'latest'}"]
            secs2, rows2 = train(ctx, run, [*half, *common(ctx, seed, b.half_rl_steps), "model.lora.save_merged=false"])
            rec.update(rl_s=secs2, rl_rows=rows2)
            episodes += episodes_drawn(rows2, b.n, b.prompts)
            secs, steps = secs + secs2, steps + b.half_rl_steps
        rec.update(episodes=episodes, steps=steps, train_s=secs)
        if ctx.dry:
            return rec
        rec.update(evaluate(ctx, str(run / "checkpoints" / "latest"), f"{algo}-s{seed}", RESULTS / f"seed{seed}" / f"{algo}_eval.json"))
        return rec
    else:
        raise ValueError(f"unknown algorithm {algo!r}; choose from {ALGOS}")
    rec.update(episodes=episodes_drawn(rows, b.n, b.prompts), steps=len(rows), train_s=secs, rows=rows)
    if ctx.dry:
        return rec
    rec["sampled_accuracy"] = [r.get("reward/accuracy") for r in rows]
    rec.update(evaluate(ctx, str(run / "checkpoints" / "latest"), f"{algo}-s{seed}", RESULTS / f"seed{seed}" / f"{algo}_eval.json"))
    return rec


def run_units(ctx: Ctx, seeds: Sequence[int], algos: Sequence[str], max_minutes: float | None,
              chunk_minutes: float = 0.0) -> None:
    units: list[tuple[str, Any]] = [("base", lambda: unit_base(ctx))]
    for s in seeds:
        units.append((unit_key("data", s), lambda s=s: unit_data(ctx, s)))
        units += [(unit_key(a, s), lambda a=a, s=s: unit_algo(ctx, a, s)) for a in algos]
    t_start = time.time()
    lock = HeavyLock(None if ctx.dry else ctx.lock, chunk_minutes * 60)
    for key, fn in units:
        if ctx.store.done(key) and not ctx.dry:
            print(f"[done] {key}", flush=True)
            continue
        if max_minutes is not None and time.time() - t_start > max_minutes * 60:
            print(f"[stop] --max-minutes {max_minutes} reached before {key}; run again to continue", flush=True)
            break
        lock.hold()
        try:
            load = os.getloadavg()[0]
            t0 = time.time()
            ctx.commands = []
            print(f"[unit] {key} (load {load:.2f})", flush=True)
            rec = fn()
            if ctx.dry:
                continue
            rec.update(commands=ctx.commands, load_start=load, load_end=os.getloadavg()[0],
                       started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), unit_s=time.time() - t0)
            ctx.store.put(key, rec)
            print(f"[unit] {key} done in {rec['unit_s']:.0f} s: "
                  + (f"accuracy {rec['accuracy']:.3f}" if "accuracy" in rec else json.dumps({k: rec[k] for k in rec if k in ('sft_rows', 'pairs', 'sampled_accuracy')})), flush=True)
        finally:
            lock.maybe_release()
    lock.maybe_release(force=True)


# ----------------------------------------------------------------------------------------------------------------
# `sample`: one pass of n episodes per task from the base, written as SFT rows, the first half's SFT rows, DPO pairs

def sample_command(seed: int, tasks: Path, n: int, half: int, out: Path) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `toolrl data sft` (before torch loads)
    from toolrl.config import load_config
    from toolrl.trainer.conversations import write_jsonl
    from toolrl.trainer.offline_data import best_conversations, best_worst_pairs, sample_and_score

    cfg = load_config(str(ROOT / BASE_CONFIG), [f"trainer.seed={seed}"])
    t0 = time.perf_counter()
    scored = sample_and_score(cfg, MODEL, str(tasks), n)
    secs = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    sft, sft_half, pairs = best_conversations(scored), best_conversations(scored[:half]), best_worst_pairs(scored)
    for rows, name in ((sft, "sft.jsonl"), (sft_half, "sft_half.jsonl"), (pairs, "pairs.jsonl")):
        path = out / name
        if rows:
            write_jsonl(rows, path)
        else:
            path.write_text("", encoding="utf-8")
    samples = [(c, r.total) for s in scored for _, r, c in s.samples]
    info = {"episodes": len(samples), "tasks": len(scored), "correct_samples": sum(c for c, _ in samples),
            "tasks_with_correct": sum(any(c for _, _, c in s.samples) for s in scored),
            "sft_rows": len(sft), "sft_half_rows": len(sft_half), "pairs": len(pairs), "sampling_s": secs,
            "rewards": [[r.total for _, r, _ in s.samples] for s in scored]}
    (out / "sample.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    print(json.dumps({k: v for k, v in info.items() if k != "rewards"}))


def print_table(store: Store) -> None:
    from rich.console import Console
    from rich.table import Table

    heldout = int(store.meta.get("heldout", 32))
    rows = table_rows(store.units)
    t = Table(title=f"held-out accuracy (greedy, {heldout} arith-tool tasks) after each algorithm, "
                    f"{store.meta.get('budget', '?')} sampled episodes each")
    for c in ("algorithm", "accuracy by seed", "mean", "sd", "tool calls/task", "episodes", "steps", "train s"):
        t.add_column(c, justify="left" if c == "algorithm" else "right")
    for r in rows:
        t.add_row(r["algo"], " ".join(f"{a:.2f}" for a in r["acc"]), f"{r['mean']:.2f}",
                  "-" if r["sd"] is None else f"{r['sd']:.2f}", " ".join(f"{x:.2f}" for x in r["tool_calls"]),
                  " ".join(map(str, r["episodes"])), " ".join(map(str, r["steps"])),
                  " ".join(f"{x:.0f}" for x in r["train_s"]) or "-")
    Console().print(t)
    print(markdown_table(rows, heldout))


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("run", "plan"):
        r = sub.add_parser(name)
        r.add_argument("--seeds", type=int, nargs="+", default=[0])
        r.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
        r.add_argument("--budget", type=int, default=48, help="sampled episodes per algorithm")
        r.add_argument("--n", type=int, default=4, help="samples per prompt (GRPO group, SFT/DPO sampling)")
        r.add_argument("--prompts", type=int, default=3, help="prompts per RL step")
        r.add_argument("--heldout", type=int, default=32, help="held-out tasks (seed 7)")
        r.add_argument("--epochs", type=int, default=3, help="passes over the SFT rows / DPO pairs")
        r.add_argument("--lr", type=float, default=1e-4, help="every algorithm's LoRA learning rate")
        r.add_argument("--max-minutes", type=float, default=None, help="start no new unit after this long")
        r.add_argument("--lock", default="/tmp/toolrl-heavy.lock", help="flock held per chunk of units ('' = none)")
        r.add_argument("--chunk-minutes", type=float, default=0.0,
                       help="keep the lock across units until held this long (0 = give it back after every unit)")
        r.add_argument("--results", type=Path, default=RESULTS / "results.json")
    sub.add_parser("table").add_argument("--results", type=Path, default=RESULTS / "results.json")
    s = sub.add_parser("sample")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--tasks", type=Path, required=True)
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--half", type=int, required=True)
    s.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.cmd == "sample":
        sample_command(a.seed, a.tasks, a.n, a.half, a.out)
        return
    store = Store.load(a.results)
    if a.cmd == "table":
        print_table(store)
        return
    meta = {"budget": a.budget, "n": a.n, "prompts": a.prompts, "heldout": a.heldout, "epochs": a.epochs, "lr": a.lr,
            "model": MODEL, "base_config": BASE_CONFIG, "machine": f"{platform.machine()}, {os.cpu_count()} cpus"}
    if store.meta and any(store.meta.get(k) != v for k, v in meta.items() if k != "machine"):
        raise SystemExit(f"{a.results} was made with {store.meta}; these settings differ ({meta}). "
                         "Use another --results file or the same settings.")
    store.meta = {**meta, **{k: v for k, v in store.meta.items() if k not in meta}}
    ctx = Ctx(Budget(a.budget, a.n, a.prompts), a.heldout, a.epochs, a.lr, store, WORK, a.lock or None,
              dry=a.cmd == "plan")
    run_units(ctx, a.seeds, a.algos, a.max_minutes, a.chunk_minutes)
    if a.cmd == "run":
        print_table(store)


if __name__ == "__main__":
    main()
