#!/usr/bin/env bash
# `make loadtest`: start the toolrl server on 127.0.0.1, run locust headless against it for a bounded
# time and user count, and write the CSV plus a summary (RPS, p50/p95/p99, failures, server RSS at
# start/end) under benchmarks/results/.
#
# Environment (all optional):
#   LOADTEST_MODEL=smollm2-135m-instruct  LOADTEST_USERS=32  LOADTEST_SPAWN_RATE=8
#   LOADTEST_RUN_TIME=60s  LOADTEST_MAX_TOKENS=32  LOADTEST_MAX_BATCH_SIZE=32
#   LOADTEST_NUM_THREADS=<torch threads in the server>  LOADTEST_OUT=benchmarks/results  LOADTEST_TAG=<name>
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
echo "[loadtest] $(uptime)"
exec "$PY" -m toolrl_serving.loadtest "$@"
