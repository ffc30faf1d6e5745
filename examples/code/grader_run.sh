#!/usr/bin/env bash
# Issue 12's check that GRPO still trains with the code reward grading in a separate trusted process
# (docs/BENCHMARKS.md, "GRPO with code_pass_rate through the grader"). Cut to fit about 15 minutes
# of a quiet 2-core CPU: 8 `code` tasks without the tool, Qwen2.5-Coder-0.5B LoRA, 4 prompts x 4
# samples, one turn of up to 128 tokens, no KL, lr 2e-4.
#   flock /tmp/toolrl-heavy.lock bash examples/code/grader_run.sh SEED [STEPS]
# Per-step metrics land in runs/code12-s<SEED>/ (metrics.jsonl); the summary is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
SEED=${1:-0}
STEPS=${2:-6}
OUT=runs/code12-s$SEED
mkdir -p data
stamp() { echo "[code12] $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg): $*"; }
.venv/bin/toolrl data make code --n 8 --seed 0 --out data/code12_train.jsonl tool=false
stamp "train seed $SEED, $STEPS steps -> $OUT"
rm -rf "$OUT"
.venv/bin/toolrl train --config examples/code/config.yaml \
  data.train_file=data/code12_train.jsonl data.eval_file=data/code12_train.jsonl trainer.eval_freq=0 \
  rollout.max_turns=1 rollout.max_new_tokens=128 rollout.max_total_tokens=384 algorithm.kl_coef=0 \
  trainer.total_steps="$STEPS" trainer.save_freq=0 trainer.lr=2.0e-4 trainer.micro_batch_size=4 \
  trainer.seed="$SEED" trainer.output_dir="$OUT"
stamp "done"
