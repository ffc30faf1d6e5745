"""Fixtures shared by the integration tests: the real Docker engine and a SmolLM2 hf backend."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def docker_ready():
    """The Docker client, with the sandbox image built. `make test` starts the engine and builds the image
    first, so their absence is a failure that says what to run, not a skip."""
    from toolrl_sandbox import EngineUnavailableError, engine, image

    try:
        client = engine.connect(timeout=10)
    except EngineUnavailableError as exc:
        pytest.fail(f"Docker engine not reachable ({exc}): run `bash scripts/ensure_docker.sh` or `make test`")
    if image.image_is_current(client, image.default_image()) is None:
        pytest.fail("the sandbox image is not built: run `.venv/bin/toolrl-sandbox build`")
    return client


@pytest.fixture(scope="module")
def smol(smollm2_path):
    """An hf backend on SmolLM2-135M-Instruct (CPU, batches of up to 8), closed after the module."""
    from toolrl.rollout.base import BackendSettings
    from toolrl.rollout.hf_backend import HFBackend

    backend = HFBackend(BackendSettings(model_path=str(smollm2_path), device="cpu", max_batch_size=8))
    yield backend
    backend.close()
