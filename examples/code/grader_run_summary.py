"""Per-epoch summary of examples/code/grader_run.sh runs (issue 12's check that GRPO still trains).

    python examples/code/grader_run_summary.py runs/code12-s0 runs/code12-s1

The runs train on 8 tasks, 4 per step, so steps 2k-1 and 2k (epoch k) together hold every task once
with 4 samples each: epoch means compare like with like, while single steps differ by which tasks
they drew. Reads each run's samples/step_N.jsonl (trainer.log_samples).
"""

from __future__ import annotations

import sys
from statistics import mean

from toolrl.metrics.samples import logged_steps, read_samples


def epochs(run: str, steps_per_epoch: int = 2) -> list[dict[str, float]]:
    rows_by_step = {s: read_samples(run, s)[1] for s in logged_steps(run)}
    out = []
    for first in range(1, max(rows_by_step) + 1, steps_per_epoch):
        rows = [r for s in range(first, first + steps_per_epoch) for r in rows_by_step.get(s, [])]
        scored = [r for r in rows if r["reward"] is not None]
        out.append({"reward": mean(r["reward"] for r in scored),
                    "all_pass": mean(1.0 if r["reward"] == 1.0 else 0.0 for r in scored),
                    "truncated": mean(1.0 if r["finish_reason"] == "length" else 0.0 for r in rows),
                    "tokens": mean(r["sampled_tokens"] for r in rows),
                    "masked": float(len(rows) - len(scored)), "episodes": float(len(rows))})
    return out


def main(runs: list[str]) -> None:
    per_run = {run: epochs(run) for run in runs}
    n = min(len(e) for e in per_run.values())
    print("| epoch (steps) | " + " | ".join(f"reward {r}" for r in runs) + " | mean reward | all tests pass (mean) "
          "| truncated at 128 tokens (mean) | sampled tokens (mean) | masked (infra) |")
    print("| --- | " + " | ".join("---:" for _ in runs) + " | ---: | ---: | ---: | ---: | ---: |")
    for k in range(n):
        es = [per_run[r][k] for r in runs]
        print(f"| {k + 1} ({2 * k + 1}-{2 * k + 2}) | " + " | ".join(f"{e['reward']:.3f}" for e in es)
              + f" | {mean(e['reward'] for e in es):.3f} | {mean(e['all_pass'] for e in es):.3f}"
              f" | {mean(e['truncated'] for e in es):.2f} | {mean(e['tokens'] for e in es):.1f}"
              f" | {int(sum(e['masked'] for e in es))} of {int(sum(e['episodes'] for e in es))} |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["runs/code12-s0", "runs/code12-s1"])
