# The README's two commands: `make demo` and `make test`. Both set up a fresh
# Debian machine idempotently (Python venv, torch CPU pin, the packages in
# editable mode, model packages, Docker engine, sandbox image).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.toolrl-setup
SETUP_INPUTS := scripts/setup_python.sh $(wildcard pyproject.toml */pyproject.toml plugins/*/*/pyproject.toml)
PYTEST_ARGS ?=
# Two test processes (pytest-xdist) on a machine (or container) with at least 2 CPUs and 20 GB of memory, else
# one: scripts/test_workers.sh. `--dist loadfile`: each file's tests on one worker (module fixtures start once);
# the memory-heavy training files (conftest.py: MEMORY_HEAVY) are one unit, handed out first, so one worker runs
# them from the start while the other takes every other file. On the 2-core, 24 GiB CI machine (2026-12-05):
# 944 s against 1372 s in one process, peak 18.2-19.2 GiB in use (docs/BENCHMARKS.md, "Test suite").
# `make test PYTEST_XDIST=` runs one process.
PYTEST_XDIST ?= $(shell bash scripts/test_workers.sh)

.PHONY: setup python docker demo test test-unit loadtest bench clean-runs help

help:
	@echo "make demo   - set up, train a small tool-using agent on the CPU, evaluate, serve and query it"
	@echo "make test   - set up, then run the unit and integration tests"
	@echo "make loadtest - start the server and run locust against it (results in benchmarks/results/)"

python: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	PYTHON=$(PYTHON) bash scripts/setup_python.sh
	@touch $@

docker: $(STAMP)
	bash scripts/ensure_docker.sh
	$(BIN)/toolrl-sandbox build

setup: python docker

demo: setup
	bash scripts/demo.sh

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_XDIST) $(PYTEST_ARGS)

test-unit: python
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not integration" $(PYTEST_XDIST) $(PYTEST_ARGS)

loadtest: setup
	bash scripts/loadtest.sh

clean-runs:
	rm -rf runs/
