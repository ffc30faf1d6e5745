"""Fixtures of toolrl-env-memory's tests: the real MiniLM embedder, loaded once per session."""

import pytest

from toolrl.env import EnvContext


@pytest.fixture(scope="session")
def embedder():
    from toolrl_env_memory.embedder import Embedder

    return Embedder()


@pytest.fixture
async def ctx(embedder):
    """A run context whose shared embedder is the session's (so it loads once)."""
    from toolrl_env_memory.embedder import SHARED_KEY

    c = EnvContext()
    await c.shared(f"{SHARED_KEY}:all-minilm-l6-v2", lambda: embedder)
    yield c
    await c.aclose()
