#!/usr/bin/env bash
# Synchronous vs asynchronous rollouts (trainer.async_rollouts.max_staleness=1) on the CPU: SmolLM2-135M,
# examples/format, a separate hf engine actor (1 core) beside the trainer rank (1 core), 6 steps each.
# Prints per-run medians over steps 2..6 (step time, rollout, update, trainer wait, lag, overlap).
#   flock /tmp/toolrl-heavy.lock bash benchmarks/async_cpu.sh [OUT_DIR]
set -euo pipefail
OUT=${1:-/tmp/toolrl-async-cpu}
mkdir -p "$OUT"
[ -f "$OUT/format_train.jsonl" ] || .venv/bin/python benchmarks/train_bench.py --write-tasks "$OUT/format" >/dev/null
COMMON=(data.train_file="$OUT/format_train.jsonl" data.eval_file=null trainer.eval_freq=0 trainer.save_freq=0
        trainer.total_steps=6 algorithm.kl_coef=0 rollout.placement=separate ray.num_cpus=2 ray.torch_threads=1
        ray.policy.num_cpus=1 ray.engine.num_cpus=1 "trainer.metric_sinks=[jsonl]" trainer.log_samples=false)
for S in 0 1; do
  rm -rf "$OUT/run-s$S"
  .venv/bin/toolrl train --config examples/format/config.yaml "${COMMON[@]}" trainer.output_dir="$OUT/run-s$S" \
    trainer.async_rollouts.max_staleness=$S > "$OUT/run-s$S.log" 2>&1
done
.venv/bin/python - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
for s in (0, 1):
    rows = [json.loads(l) for l in (out / f"run-s{s}" / "metrics.jsonl").read_text().splitlines() if l.strip()]
    rows = [r for r in rows if r.get("step", 0) >= 2]
    med = lambda k: statistics.median(r.get(k, 0.0) for r in rows)
    print(f"max_staleness={s}: step {med('timing/step'):.2f}s  rollout {med('timing/rollout'):.2f}s  "
          f"update {med('timing/update'):.2f}s  wait {med('timing/rollout_wait'):.2f}s  "
          f"lag {[r['rollout/weight_lag'] for r in rows]}  overlap {med('async/rollout_overlap'):.2f}  "
          f"reward {[round(r['reward/mean'], 3) for r in rows]}")
PY
