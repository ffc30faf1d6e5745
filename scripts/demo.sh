#!/usr/bin/env bash
# `make demo`: train a small tool-using agent on the CPU with sandbox rewards, evaluate it against the
# base model on held-out tasks, plot the run, serve the checkpoint and query it with the openai client.
# (`make demo` has already set up .venv, Docker and the sandbox image when this runs.)
#
# Knobs (environment variables; the defaults are the measured demo, docs/BENCHMARKS.md):
#   DEMO_MODEL      model name or folder            (qwen2.5-coder-0.5b-instruct)
#   DEMO_CONFIG     training config                  (examples/demo/config.yaml)
#   DEMO_STEPS      GRPO steps                       (the config's trainer.total_steps)
#   DEMO_TRAIN_N    training tasks                   (200)
#   DEMO_EVAL_N     held-out evaluation tasks        (32)
#   DEMO_SEED       training seed                    (0)
#   DEMO_RUN_DIR    where everything goes            (runs/demo-<date>-<time>; never overwritten)
#   DEMO_PORT       port of the demo server          (8765, on 127.0.0.1)
#   DEMO_OVERRIDES  extra `key=value` config overrides for training and evaluation
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export PYTHONUNBUFFERED=1

MODEL="${DEMO_MODEL:-qwen2.5-coder-0.5b-instruct}"
CONFIG="${DEMO_CONFIG:-examples/demo/config.yaml}"
TRAIN_N="${DEMO_TRAIN_N:-200}"
EVAL_N="${DEMO_EVAL_N:-32}"
SEED="${DEMO_SEED:-0}"
RUN="${DEMO_RUN_DIR:-runs/demo-$(date +%Y%m%d-%H%M%S)}"
PORT="${DEMO_PORT:-8765}"
read -r -a EXTRA <<< "${DEMO_OVERRIDES:-}"
STEPS=()
[ -n "${DEMO_STEPS:-}" ] && STEPS=("trainer.total_steps=${DEMO_STEPS}")

START=$(date +%s)
stage() { printf '\n\033[1m== %s  (+%ss)\033[0m\n' "$1" "$(( $(date +%s) - START ))"; }

if [ -e "$RUN/train" ]; then
  echo "demo: $RUN already holds a run; set DEMO_RUN_DIR to a new folder" >&2
  exit 2
fi
mkdir -p "$RUN"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

stage "1/8 toolrl doctor"
$BIN/toolrl doctor

stage "2/8 tasks: $TRAIN_N for training, $EVAL_N held out (different seeds)"
$BIN/toolrl data make arith-tool --n "$TRAIN_N" --seed $((1000 + SEED)) --out "$RUN/data/train.jsonl" difficulty=easy
$BIN/toolrl data make arith-tool --n "$EVAL_N" --seed 7 --out "$RUN/data/eval.jsonl" difficulty=easy

COMMON=(--config "$CONFIG" --tasks "$RUN/data/eval.jsonl" "model.name_or_path=$MODEL" "${EXTRA[@]}")

stage "3/8 evaluate the base model ($MODEL) on the held-out tasks"
$BIN/toolrl eval --model "$MODEL" --label base --out "$RUN/eval_base.json" "${COMMON[@]}"

stage "4/8 train: GRPO with sandbox rewards ($CONFIG)"
$BIN/toolrl train --config "$CONFIG" "model.name_or_path=$MODEL" "data.train_file=$RUN/data/train.jsonl" \
  "data.eval_file=$RUN/data/eval.jsonl" "trainer.output_dir=$RUN/train" "trainer.seed=$SEED" \
  "${STEPS[@]}" "${EXTRA[@]}"
CKPT="$RUN/train/checkpoints/latest"

stage "5/8 evaluate the trained checkpoint on the same held-out tasks"
$BIN/toolrl eval --model "$CKPT" --label trained --out "$RUN/eval_trained.json" "${COMMON[@]}"

stage "6/8 before / after"
$BIN/toolrl compare "$RUN/eval_base.json" "$RUN/eval_trained.json" | tee "$RUN/before_after.txt"

stage "7/8 plot the run"
$BIN/toolrl plot "$RUN/train"

stage "8/8 serve the checkpoint and ask it a question through the openai client"
$BIN/toolrl serve "$CKPT" --port "$PORT" --served-model-name demo > "$RUN/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 180); do
  if curl -fsS "http://127.0.0.1:$PORT/health" > /dev/null 2>&1; then break; fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "the server exited; see $RUN/server.log" >&2; tail -20 "$RUN/server.log" >&2; exit 1; fi
  sleep 1
done
$BIN/python scripts/demo_query.py --base-url "http://127.0.0.1:$PORT/v1" --model demo --tasks "$RUN/data/eval.jsonl" \
  | tee "$RUN/served_answer.txt"
cleanup
SERVER_PID=""

TOTAL=$(( $(date +%s) - START ))
stage "done in ${TOTAL}s"
cat <<EOF
  checkpoint        $CKPT   (serve it: .venv/bin/toolrl serve $CKPT)
  metrics           $RUN/train/metrics.jsonl, metrics.csv   (TensorBoard: tensorboard --logdir $RUN/train)
  plots             $RUN/train/plots/
  before / after    $RUN/before_after.txt   ($RUN/eval_base.json, $RUN/eval_trained.json)
  served answer     $RUN/served_answer.txt
  logs              $RUN/train/train.log, $RUN/server.log
EOF
