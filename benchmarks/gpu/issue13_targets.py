"""Issue 13's four GPU targets, read from the result files of one sitting, as one table.

    python3 benchmarks/gpu/rollout_vs_llm.py --tokenizer /root/qwen_tok --out $OUT/rollout.json
    python3 benchmarks/gpu/grpo_vs_trl.py --tokenizer /root/qwen_tok --sizes 256 --steps 8 \
        --systems "trl_vllm,toolrl,toolrl_async_graphs+engine_stream_priority=high" --out $OUT/grpo_a.json
    python3 benchmarks/gpu/issue13_targets.py --rollout $OUT/rollout.json [more] --grpo $OUT/grpo_a.json [more] \
        --out $OUT/targets.json

The targets (at 256 completions per step):
- synchronous toolrl `vllm` >= 1.3x TRL-vLLM's samples/s (the fastest synchronous toolrl run);
- asynchronous >= 2x TRL-vLLM (the fastest asynchronous run);
- the `vllm` backend's rollout (`agenerate`, the trainer's path) >= 1.0x `LLM.generate` with the same engine
  settings and sampling parameters (with several rollout files, the lowest of their ratios);
- peak memory <= TRL's at the same shape (NVML peak of the synchronous run that the first row uses; the lowest
  of any toolrl run is shown beside it).

TRL-vLLM's reference is its *fastest* run over all the given files (TRL's own spread between runs is large;
docs/BENCHMARKS.md), and its *lowest* peak. Each grpo file's own ratios (TRL of the same call) are listed too,
and so is a typical-run reading: every system's median samples/s over its runs in the files (a system is the
run's full name, options included) against TRL-vLLM's median.
`--retime` times asynchronous runs over steps 3..N-1 from their `step_seconds` (the rule since 2026-12-05; older
files counted step 2, which trains a batch made beside the long first step).
The files must come from one sitting: the script checks that they name one device model, not that they come
from one machine (the sitting's notes say that).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import importlib.util
import statistics
from pathlib import Path
from typing import Any

SIZE = 256
TRL = ("trl_vllm", "trl_vllm_compile")
# TRL runs that are not the targets' baseline (one generation for two optimizer steps): reported on their own
TRL_OTHER = ("trl_vllm_gen2",)


def _kind(key: str) -> str:
    """'toolrl_async+x=1#3@256' -> 'toolrl_async'."""
    return key.split("@")[0].split("#")[0].split("+")[0]


def runs_at(results: dict[str, Any], size: int = SIZE) -> dict[str, dict[str, Any]]:
    """The finished runs of one grpo_vs_trl.py result at `size` completions per step (errors dropped)."""
    return {k: r for k, r in results.get("runs", {}).items() if k.endswith(f"@{size}") and "samples_per_s" in r}


@functools.cache
def _steady_steps():
    """`toolrl_inproc.steady_steps`, loaded once from its file (the benchmarks' folder stays off sys.path)."""
    spec = importlib.util.spec_from_file_location("_toolrl_inproc", Path(__file__).resolve().parent / "toolrl_inproc.py")
    inproc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inproc)
    return inproc.steady_steps


def retimed(results: dict[str, Any]) -> dict[str, Any]:
    """A copy of one grpo_vs_trl.py result whose asynchronous toolrl runs are timed over their steady steps as
    `toolrl_inproc.steady_steps` counts them now (3..N-1), from their `step_seconds`: for files written before
    2026-12-05, whose asynchronous runs counted step 2 (`--retime`). Other runs are left as they are."""
    steady_steps = _steady_steps()
    out = copy.deepcopy(results)
    for r in out.get("runs", {}).values():
        seconds = r.get("step_seconds")
        if not r.get("max_staleness") or not seconds or "samples_per_s" not in r or r.get("steps_per_rollout", 1) > 1:
            continue  # (runs of several steps per job were timed over whole jobs from the start)
        first, last = steady_steps(len(seconds), True)
        med = statistics.median(seconds[first - 1:last])
        r.update(median_step_s=med, samples_per_s=r["completions"] / med, steps_timed=f"{first}..{last}")
    return out


def rollout_ratio(rollout: dict[str, Any]) -> float:
    """`agenerate`'s tokens/s over `LLM.generate`'s with the backend's parameters, in one rollout_vs_llm.py result."""
    rows = rollout["rows"]
    return rows["backend.agenerate"]["tok_per_s"] / rows["LLM.generate (backend's params)"]["tok_per_s"]


def targets(rollout: dict[str, Any] | list[dict[str, Any]] | None, grpo: list[dict[str, Any]],
            size: int = SIZE) -> dict[str, Any]:
    """The four targets' rows (measured value, the run it comes from, whether met) and the per-file ratios.

    `rollout` may be several rollout_vs_llm.py results of the sitting: the row takes the lowest ratio.
    """
    rollouts = [] if rollout is None else [rollout] if isinstance(rollout, dict) else list(rollout)
    runs: dict[str, dict[str, Any]] = {}
    for i, res in enumerate(grpo):
        for k, r in runs_at(res, size).items():
            runs[f"{chr(ord('a') + i)}:{k}"] = r
    trl = {k: r for k, r in runs.items() if _kind(k.split(":", 1)[1]) in TRL}
    other = {k: r for k, r in runs.items() if _kind(k.split(":", 1)[1]) in TRL_OTHER}
    ours = {k: r for k, r in runs.items() if k not in trl and k not in other}
    sync = {k: r for k, r in ours.items() if not r.get("max_staleness")}
    asyn = {k: r for k, r in ours.items() if r.get("max_staleness")}
    rows: list[dict[str, Any]] = []
    trl_best = max((r["samples_per_s"] for r in trl.values()), default=None)
    trl_peak = min((r["nvml_peak_gib"] for r in trl.values()), default=None)

    def speed_row(name: str, pool: dict[str, dict[str, Any]], need: float) -> str | None:
        if not pool or trl_best is None:
            rows.append({"target": name, "need": need, "measured": None, "run": None, "met": False,
                         "why": "no TRL-vLLM run" if trl_best is None else "no such toolrl run"})
            return None
        key = max(pool, key=lambda k: pool[k]["samples_per_s"])
        ratio = pool[key]["samples_per_s"] / trl_best
        rows.append({"target": name, "need": need, "measured": ratio, "run": key, "met": ratio >= need})
        return key

    sync_key = speed_row("sync samples/s vs TRL-vLLM", sync, 1.3)
    speed_row("async samples/s vs TRL-vLLM", asyn, 2.0)
    if not rollouts:
        rows.append({"target": "rollout tok/s vs LLM.generate", "need": 1.0, "measured": None, "run": None,
                     "met": False, "why": "no rollout_vs_llm.py result"})
    else:
        each = [rollout_ratio(r) for r in rollouts]
        worst = min(range(len(each)), key=each.__getitem__)
        run = "backend.agenerate" + (f" (rollout file {worst + 1} of {len(each)})" if len(each) > 1 else "")
        rows.append({"target": "rollout tok/s vs LLM.generate", "need": 1.0, "measured": each[worst],
                     "run": run, "met": each[worst] >= 1.0, "each": each})
    if sync_key is None or trl_peak is None:
        rows.append({"target": "peak GiB vs TRL-vLLM", "need": 1.0, "measured": None, "run": None, "met": False,
                     "why": "needs a synchronous toolrl run and a TRL-vLLM run"})
    else:
        peak = sync[sync_key]["nvml_peak_gib"]
        lowest = min(ours, key=lambda k: ours[k]["nvml_peak_gib"])
        rows.append({"target": "peak GiB vs TRL-vLLM", "need": 1.0, "measured": peak / trl_peak, "run": sync_key,
                     "met": peak <= trl_peak, "peak_gib": peak, "trl_peak_gib": trl_peak,
                     "lowest_toolrl": {"run": lowest, "peak_gib": ours[lowest]["nvml_peak_gib"]}})
    per_file = []
    for i, res in enumerate(grpo):
        rs = runs_at(res, size)
        ref = max((r["samples_per_s"] for k, r in rs.items() if _kind(k) in TRL), default=None)
        per_file.append({k: (r["samples_per_s"] / ref if ref else None) for k, r in rs.items()
                         if _kind(k) not in TRL and _kind(k) not in TRL_OTHER})
    devices = sorted({d for d in [*(g.get("device") for g in grpo), *(r.get("device") for r in rollouts)] if d})
    # the asynchronous row takes the fastest setting; this gives each setting's best against TRL's fastest
    by_setting: dict[str, float] = {}
    for r in asyn.values():
        setting = f"max_staleness={r['max_staleness']},steps_per_rollout={r.get('steps_per_rollout', 1)}"
        if trl_best:
            by_setting[setting] = max(by_setting.get(setting, 0.0), r["samples_per_s"] / trl_best)
    gen2 = max((r["samples_per_s"] for r in other.values()), default=None)
    return {"size": size, "devices": devices, "trl_fastest_samples_per_s": trl_best, "trl_lowest_peak_gib": trl_peak,
            "trl_gen2_fastest_samples_per_s": gen2, "async_by_setting": by_setting, "rows": rows, "same_call_ratios": per_file, "medians": medians(runs),
            "all_met": all(r["met"] for r in rows)}


def medians(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per system (the run's name with options, without the file letter and repeat mark): how many runs, their
    median, lowest and highest samples/s, and the median against TRL-vLLM's median (None without a TRL run)."""
    by: dict[str, list[float]] = {}
    for key, r in runs.items():
        system = key.split(":", 1)[1].split("@")[0].split("#")[0]
        by.setdefault(system, []).append(r["samples_per_s"])
    trl = sorted(x for s, xs in by.items() if s in TRL for x in xs)
    trl_median = statistics.median(trl) if trl else None
    return {s: {"runs": len(xs), "median": statistics.median(xs), "lowest": min(xs), "highest": max(xs),
                "vs_trl_median": (statistics.median(xs) / trl_median if trl_median and s not in TRL else None)}
            for s, xs in sorted(by.items())}


def table(result: dict[str, Any]) -> str:
    out = [f"{'target':<32}{'need':>6}{'measured':>10}  {'met':<5}run"]
    for r in result["rows"]:
        measured = "-" if r["measured"] is None else f"{r['measured']:.2f}"
        what = r["run"] or r.get("why", "")
        out.append(f"{r['target']:<32}{r['need']:>6.1f}{measured:>10}  {'yes' if r['met'] else 'NO':<5}{what}")
    best, peak = result["trl_fastest_samples_per_s"], result["trl_lowest_peak_gib"]
    out.append(f"TRL-vLLM: fastest {'-' if best is None else f'{best:.1f}'} samples/s, lowest peak "
               f"{'-' if peak is None else f'{peak:.1f}'} GiB; devices: {', '.join(result['devices']) or '?'}")
    for system, m in result.get("medians", {}).items():
        vs = "" if m["vs_trl_median"] is None else f", {m['vs_trl_median']:.2f}x TRL-vLLM's median"
        out.append(f"median of {m['runs']} run(s) {m['median']:.1f} samples/s ({m['lowest']:.1f}-{m['highest']:.1f})"
                   f"{vs}: {system}")
    for i, ratios in enumerate(result["same_call_ratios"]):
        shown = ", ".join(f"{k.split('@')[0]} {v:.2f}x" for k, v in ratios.items() if v is not None)
        out.append(f"file {chr(ord('a') + i)}, against its own TRL run: {shown or '-'}")
    for setting, ratio in result.get("async_by_setting", {}).items():
        out.append(f"asynchronous {setting}: best {ratio:.2f}x TRL-vLLM's fastest")
    if result.get("trl_gen2_fastest_samples_per_s"):
        out.append(f"TRL-vLLM with one generation per two steps (trl_vllm_gen2): fastest "
                   f"{result['trl_gen2_fastest_samples_per_s']:.1f} samples/s")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rollout", nargs="*", default=[],
                    help="rollout_vs_llm.py result files of the same sitting (the lowest ratio counts)")
    ap.add_argument("--grpo", nargs="+", required=True, help="grpo_vs_trl.py result files of the same sitting")
    ap.add_argument("--size", type=int, default=SIZE)
    ap.add_argument("--retime", action="store_true",
                    help="time asynchronous runs over steps 3..N-1 from their step_seconds (files written before "
                         "2026-12-05 counted step 2)")
    ap.add_argument("--out", default="issue13_targets.json")
    a = ap.parse_args()
    for path in [*a.rollout, *a.grpo]:
        if not Path(path).is_file():
            raise SystemExit(f"issue13_targets: {path} does not exist (pass the result files the benchmarks wrote)")
    grpo = [json.loads(Path(p).read_text()) for p in a.grpo]
    if a.retime:
        grpo = [retimed(g) for g in grpo]
    rollouts = [json.loads(Path(p).read_text()) for p in a.rollout]
    result = targets(rollouts or None, grpo, a.size)
    if len(result["devices"]) > 1:
        raise SystemExit(f"issue13_targets: the files name several devices {result['devices']}: not one sitting")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(table(result))


if __name__ == "__main__":
    main()
