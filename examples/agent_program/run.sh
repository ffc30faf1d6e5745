#!/usr/bin/env bash
# The measured before/after of examples/agent_program (docs/BENCHMARKS.md, "Agent program"):
#   flock /tmp/toolrl-heavy.lock bash examples/agent_program/run.sh
# Tasks, greedy held-out evaluation of the base model, GRPO training of the agent program, evaluation of
# the trained checkpoint, the before/after table. Results in benchmarks/results/agent_program/.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=benchmarks/results/agent_program
TOOLRL=.venv/bin/toolrl
mkdir -p "$OUT" data
stamp() { echo "[agent_program] $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg): $*"; }
.venv/bin/python examples/agent_program/make_tasks.py --n 200 --seed 1000 --out data/agent_train.jsonl
.venv/bin/python examples/agent_program/make_tasks.py --n 32 --seed 7 --out data/agent_eval.jsonl
stamp "base evaluation"
$TOOLRL eval --config examples/agent_program/config.yaml --model qwen2.5-coder-0.5b-instruct \
  --tasks data/agent_eval.jsonl --out "$OUT/base.json" "$@"
stamp "training"
$TOOLRL train --config examples/agent_program/config.yaml "$@"
stamp "trained evaluation"
$TOOLRL eval --config examples/agent_program/config.yaml --model runs/agent_program/checkpoints/latest \
  --tasks data/agent_eval.jsonl --out "$OUT/trained.json" "$@"
stamp "done"
$TOOLRL compare "$OUT/base.json" "$OUT/trained.json"
