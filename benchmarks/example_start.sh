#!/usr/bin/env bash
# Where an example config starts: a greedy base evaluation on 16 held-out tasks, then the first
# STEPS steps of the config itself (24 training tasks, no in-training evaluation or checkpoint).
# Used for the "Expected time" / "Expected result" of examples/{memory,bfcl,code}/README.md.
#
#   bash benchmarks/example_start.sh memory 2 "difficulty=easy" "difficulty=easy"
#   bash benchmarks/example_start.sh bfcl 2 "categories=simple,parallel,multiple split=train" \
#        "categories=simple,parallel,multiple split=test"
#   bash benchmarks/example_start.sh code 1
#
# Writes benchmarks/results/example_start/<suite>/{eval_base.json,run/metrics.jsonl,times.txt}.
set -uo pipefail
cd "$(dirname "$0")/.."
S=$1; STEPS=${2:-2}; TRAIN_ARGS=${3:-}; EVAL_ARGS=${4:-}
D=${OUT_DIR:-benchmarks/results/example_start}/$S
rm -rf "$D"; mkdir -p "$D"
B=.venv/bin
# shellcheck disable=SC2086  # the suite arguments are separate words on purpose
$B/toolrl data make "$S" --n 24 --seed 0 --out "$D/train.jsonl" $TRAIN_ARGS
# shellcheck disable=SC2086
$B/toolrl data make "$S" --n 16 --seed 1 --out "$D/eval.jsonl" $EVAL_ARGS
t0=$(date +%s)
$B/toolrl eval --model qwen2.5-coder-0.5b-instruct --tasks "$D/eval.jsonl" --config "examples/$S/config.yaml" \
  --out "$D/eval_base.json" --label base > "$D/eval.log" 2>&1
t1=$(date +%s)
$B/toolrl train --config "examples/$S/config.yaml" "data.train_file=$D/train.jsonl" data.eval_file=null \
  trainer.eval_freq=0 trainer.save_freq=0 "trainer.total_steps=$STEPS" "trainer.output_dir=$D/run" > "$D/train.log" 2>&1
t2=$(date +%s)
echo "$S eval_s=$((t1 - t0)) train_s=$((t2 - t1)) load=$(cut -d' ' -f1-3 /proc/loadavg)" | tee "$D/times.txt"
