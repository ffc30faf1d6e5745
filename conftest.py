"""Shared fixtures. Entry-point plugins are off under tests, so a stray
installed plugin cannot change results; tests that need them start a
subprocess without TOOLRL_NO_ENTRYPOINTS."""

import os

os.environ.setdefault("TOOLRL_NO_ENTRYPOINTS", "1")

import pytest  # noqa: E402


@pytest.fixture
def plugin_manager():
    """A fresh plugin manager with built-ins only; restored afterwards."""
    from toolrl import plugins

    pm = plugins.reset(load_entrypoints=False)
    yield pm
    plugins.reset(load_entrypoints=False)


@pytest.fixture(scope="session")
def smollm2_path():
    """The real SmolLM2-135M-Instruct, resolved from its PyPI package."""
    from toolrl import models

    return models.resolve("smollm2-135m-instruct", progress=False)


@pytest.fixture(scope="session")
def qwen05_path():
    """The real Qwen2.5-Coder-0.5B-Instruct, assembled from its 6 PyPI chunks."""
    from toolrl import models

    return models.resolve("qwen2.5-coder-0.5b-instruct", progress=False)
