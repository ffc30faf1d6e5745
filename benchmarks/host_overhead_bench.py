"""Two pieces of per-step Python on the trainer's and the engine's threads, against how they were written before
2026-12-05 (session 18), on this machine's CPU.

    .venv/bin/python benchmarks/host_overhead_bench.py --out benchmarks/results/host_overhead.json

- `grpo` advantages of 256 samples in 32 groups of 8: `group_stats` (a few tensor operations for all groups)
  against a loop over the groups (the former implementation, as the baseline). It runs on the trainer's thread
  once per step, between the rollout and the update.
- `delta_of` on one finished 256-token vLLM request with `logprobs=0` (one flat entry per position): the whole
  lists compared and copied against a per-position lookup (the former code). It runs on the engine thread for
  every finished request, 256 per step at the GPU benchmarks' shape. The container is a stand-in with vLLM's
  `FlatLogprobs` fields (vLLM is not installed on the CPU machine).

Median of `--reps` timings, each the mean of `--number` calls; the two ways alternate.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import timeit
from pathlib import Path
from types import SimpleNamespace

import torch

from toolrl.algorithms.advantages import EPS, AdvantageInput, broadcast_to_tokens, grpo, sequence_scores
from toolrl.rollout.vllm_backend import delta_of


def grpo_loop(batch: AdvantageInput, config) -> torch.Tensor:
    """GRPO as a loop over the groups (the former implementation, as the baseline)."""
    scores = sequence_scores(batch)
    adv = torch.zeros_like(scores)
    groups: dict[str, list[int]] = {}
    for i, g in enumerate(batch.group_ids):
        if bool(batch.valid[i]):
            groups.setdefault(g, []).append(i)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        g = scores[idx]
        adv[idx] = (g - g.mean()) / (g.std() + EPS)
    return broadcast_to_tokens(adv, batch.response_mask)


def delta_per_position(completion) -> tuple[list[int], list[float]]:
    """The former flat-logprobs path of `delta_of`: a lookup and a comparison per position."""
    ids, entries = list(completion.token_ids), completion.logprobs
    starts, flat_ids, flat_lps = entries.start_indices, entries.token_ids, entries.logprobs
    if len(starts) != len(ids) or any(flat_ids[k] != t for k, t in zip(starts, ids)):
        raise ValueError("mismatch")
    return ids, [flat_lps[k] for k in starts]


def timed(fns: dict, reps: int, number: int) -> dict[str, float]:
    """Median over `reps` of the mean seconds per call of each function, the functions alternating."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            times[k].append(timeit.timeit(fn, number=number) / number)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--number", type=int, default=50)
    ap.add_argument("--out", default="benchmarks/results/host_overhead.json")
    a = ap.parse_args()
    rng = random.Random(0)
    B, T = 256, 256
    batch = AdvantageInput(torch.tensor([rng.choice((0.0, 0.2, 1.0, 1.2)) for _ in range(B)]), torch.ones(B, T),
                           [f"g{i // 8}" for i in range(B)], torch.ones(B, dtype=torch.bool))
    config = SimpleNamespace(norm_adv_by_std=True)
    ids = [rng.randrange(151_936) for _ in range(T)]
    flat = SimpleNamespace(start_indices=list(range(T)), token_ids=list(ids), logprobs=[-rng.random() for _ in ids])
    completion = SimpleNamespace(token_ids=ids, logprobs=flat)
    assert delta_of(completion) == delta_per_position(completion)
    rows = {
        "grpo, 256 samples in 32 groups": timed({"group_stats": lambda: grpo(batch, config),
                                                 "loop over groups (before)": lambda: grpo_loop(batch, config)},
                                                a.reps, a.number),
        "delta_of, one 256-token request": timed({"whole lists": lambda: delta_of(completion),
                                                  "per position (before)": lambda: delta_per_position(completion)},
                                                 a.reps, a.number),
    }
    result = {"machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
              "reps": a.reps, "number": a.number, "seconds_per_call": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(f"{'what':<34}{'way':<28}{'per call':>12}{'vs before':>11}")
    for what, ways in rows.items():
        before = next(v for k, v in ways.items() if k.endswith("(before)"))
        for way, s in ways.items():
            print(f"{what:<34}{way:<28}{s * 1e6:>9.1f} us{before / s:>10.2f}x")


if __name__ == "__main__":
    main()
