#!/usr/bin/env bash
# The measured before/after of examples/agent_program (docs/BENCHMARKS.md, "Agent program"):
#   flock /tmp/toolrl-heavy.lock bash examples/agent_program/run.sh                # seed 0
#   SEED=1 SKIP_BASE=1 flock /tmp/toolrl-heavy.lock bash examples/agent_program/run.sh   # another seed, same base
#   SEED=1 STEPS=8 SKIP_BASE=1 flock /tmp/toolrl-heavy.lock bash examples/agent_program/run.sh   # 8 steps, not 4
# Tasks, greedy held-out evaluation of the base model, GRPO training of the agent program, evaluation of
# the trained checkpoint, the before/after table. Results in benchmarks/results/agent_program/
# (base.json; trained.json for seed 0 with the config's 4 steps, trained-s<SEED>[-<STEPS>steps].json
# otherwise). Extra arguments are config overrides for all three commands.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=benchmarks/results/agent_program
TOOLRL=.venv/bin/toolrl
SEED=${SEED:-0}
STEPS=${STEPS:-4}
TAG=s$SEED; [ "$STEPS" = 4 ] || TAG="s$SEED-${STEPS}steps"
if [ "$TAG" = s0 ]; then RUN=runs/agent_program; TRAINED="$OUT/trained.json"
else RUN=runs/agent_program-$TAG; TRAINED="$OUT/trained-$TAG.json"; fi
mkdir -p "$OUT" data
stamp() { echo "[agent_program] $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg): $*"; }
.venv/bin/python examples/agent_program/make_tasks.py --n 200 --seed 1000 --out data/agent_train.jsonl
.venv/bin/python examples/agent_program/make_tasks.py --n 32 --seed 7 --out data/agent_eval.jsonl
if [ -z "${SKIP_BASE:-}" ] || [ ! -f "$OUT/base.json" ]; then
  stamp "base evaluation"
  $TOOLRL eval --config examples/agent_program/config.yaml --model qwen2.5-coder-0.5b-instruct \
    --tasks data/agent_eval.jsonl --out "$OUT/base.json" "$@"
fi
stamp "training (seed $SEED, $STEPS steps -> $RUN)"
$TOOLRL train --config examples/agent_program/config.yaml trainer.seed="$SEED" trainer.output_dir="$RUN" \
  trainer.total_steps="$STEPS" trainer.save_freq="$STEPS" "$@"
stamp "trained evaluation"
$TOOLRL eval --config examples/agent_program/config.yaml --model "$RUN/checkpoints/latest" \
  --tasks data/agent_eval.jsonl --out "$TRAINED" "$@"
stamp "done"
$TOOLRL compare "$OUT/base.json" "$TRAINED"
