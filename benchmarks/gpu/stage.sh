#!/bin/bash
# Builds what a GPU sitting carries (docs/BENCHMARKS.md, "the next sitting"), in git-ignored folders:
#   .stage/NN            the wheels (vLLM 0.25 with ../shared/gpu/vllm-0.25.0-wheels.txt, TRL 1.16, datasets,
#                        multiprocess, Ray 2.60) in 54 MiB chunks, made by ../shared/tools/chunk.py
#   .gpu_data/qwen_tok.tar.gz   the Qwen2.5 tokenizer, saved from the GGUF of ../shared/MODELS.md
# Usage: bash benchmarks/gpu/stage.sh [--list]    (--list: print the wheel requirements, download nothing)
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
