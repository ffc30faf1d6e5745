"""build_batch at the GPU benchmarks' shape: the batch built as one tensor per field (toolrl's) against the
same layout written sample by sample (how it was built until 2026-12-04), on this machine's CPU.

    .venv/bin/python benchmarks/batch_build_bench.py --out benchmarks/results/batch_build.json

256 trajectories (32 prompts x 8) of 60 prompt and 256 response tokens; median of `--reps` builds each,
alternating. It runs on the trainer thread, beside the overlapped rollout in asynchronous mode.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import torch

from toolrl.trainer.batch import build_batch
from toolrl.types import Trajectory


def per_sample(trajectories, valid, pad_token_id):
    """The layout of build_batch, one sample at a time (the former implementation, as the baseline)."""
    B = len(trajectories)
    P = max((len(t.prompt_ids) for t in trajectories), default=0)
    T = max(max((len(t.response_ids) for t in trajectories), default=0), 1)
    input_ids = torch.full((B, P + T), pad_token_id, dtype=torch.long)
    attention = torch.zeros((B, P + T), dtype=torch.long)
    response_mask = torch.zeros((B, T), dtype=torch.float32)
    rollout_lp = torch.zeros((B, T), dtype=torch.float32)
    for i, t in enumerate(trajectories):
        p, r = len(t.prompt_ids), len(t.response_ids)
        input_ids[i, P - p:P] = torch.tensor(t.prompt_ids, dtype=torch.long)
        attention[i, P - p:P] = 1
        if r:
            input_ids[i, P:P + r] = torch.tensor(t.response_ids, dtype=torch.long)
            attention[i, P:P + r] = 1
            rollout_lp[i, :r] = torch.tensor(t.logprobs, dtype=torch.float32)
            if valid[i]:
                response_mask[i, :r] = torch.tensor(t.loss_mask, dtype=torch.float32)
    return input_ids, attention, response_mask, rollout_lp


def trajectories(n: int = 256, prompt: int = 60, response: int = 256, seed: int = 0) -> list[Trajectory]:
    rng = random.Random(seed)
    return [Trajectory(task_id=f"t{i // 8}", sample_index=i % 8,
                       prompt_ids=tuple(rng.randrange(150_000) for _ in range(prompt)),
                       response_ids=tuple(rng.randrange(150_000) for _ in range(response)),
                       loss_mask=(1,) * response, logprobs=tuple(-rng.random() for _ in range(response)),
                       messages=({"role": "user", "content": "q"},), num_prompt_messages=1) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/batch_build.json")
    a = ap.parse_args()
    trajs = trajectories()
    valid, groups = [True] * len(trajs), [t.task_id for t in trajs]
    ours = build_batch(trajs, groups, valid, 0)
    ref = per_sample(trajs, valid, 0)
    assert torch.equal(ours.input_ids, ref[0]) and torch.equal(ours.response_mask, ref[2])  # the same batch
    times: dict[str, list[float]] = {"build_batch (one tensor per field)": [], "sample by sample": []}
    for _ in range(a.reps):
        for name, fn in (("build_batch (one tensor per field)", lambda: build_batch(trajs, groups, valid, 0)),
                         ("sample by sample", lambda: per_sample(trajs, valid, 0))):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    rows = {k: {"median_ms": 1000 * statistics.median(v), "min_ms": 1000 * min(v)} for k, v in times.items()}
    res = {"samples": len(trajs), "tokens_per_sample": 316, "reps": a.reps, "torch_threads": torch.get_num_threads(),
           "machine": platform.processor() or platform.machine(), "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(f"{'method':<38}{'median ms':>10}{'min ms':>9}")
    for k, r in rows.items():
        print(f"{k:<38}{r['median_ms']:>10.1f}{r['min_ms']:>9.1f}")


if __name__ == "__main__":
    main()
