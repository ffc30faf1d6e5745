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
def shared_ray():
    """One local Ray instance (2 CPUs) for the runs of a module that do not test Ray's own start and stop.

    Started by toolrl's own `start_ray`, as `toolrl.train` starts one; `train` uses an instance it finds
    running and leaves it up, so each run saves the instance's start and shutdown (about 6 s on 2 cores).
    Every run removes its actors and placement groups at the end (`Roles.close`), as on a joined cluster.
    Tests that check the local instance's life cycle (test_train_ray's first test, test_ray_cluster) start
    their own."""
    import ray

    from toolrl.config import load_config
    from toolrl.trainer.cluster import start_ray, stop_ray

    assert not ray.is_initialized(), "a previous test left Ray running"
    started = start_ray(load_config(overrides=["ray.num_cpus=2"]))
    yield
    stop_ray(started)


@pytest.fixture(scope="module")
def smol(smollm2_path):
    """An hf backend on SmolLM2-135M-Instruct (CPU, batches of up to 8), closed after the module."""
    from toolrl.rollout.base import BackendSettings
    from toolrl.rollout.hf_backend import HFBackend

    backend = HFBackend(BackendSettings(model_path=str(smollm2_path), device="cpu", max_batch_size=8))
    yield backend
    backend.close()
