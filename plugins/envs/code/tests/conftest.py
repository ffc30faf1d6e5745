"""Fixtures of toolrl-env-code's tests: a run context whose sandbox pool is real (Docker)."""

import pytest

from toolrl.env import EnvContext


@pytest.fixture(scope="session")
def docker_ready():
    """Skip (with the reason) when the Docker engine or the sandbox image is missing."""
    toolrl_sandbox = pytest.importorskip("toolrl_sandbox")
    from toolrl_sandbox import engine, image

    try:
        client = engine.connect(timeout=10)
    except toolrl_sandbox.EngineUnavailableError as exc:
        pytest.skip(f"Docker engine not reachable: {exc}")
    if image.image_is_current(client, image.default_image()) is None:
        pytest.skip("sandbox image not built: run `toolrl-sandbox build`")
    return client


@pytest.fixture
async def ctx(docker_ready):
    c = EnvContext()
    yield c
    await c.aclose()
