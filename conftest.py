"""Shared fixtures. Entry-point plugins are off under tests, so a stray
installed plugin cannot change results; tests that need them start a
subprocess without TOOLRL_NO_ENTRYPOINTS."""

import os

os.environ.setdefault("TOOLRL_NO_ENTRYPOINTS", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two test processes on the machine's cores (pytest-xdist): idle OpenMP threads of
    # torch sleep instead of spinning on a core the other process needs (as toolrl's Ray workers do)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402


def pytest_sessionstart(session):
    """With pytest-xdist, the controller prepares the packaged models once before the workers start: two
    workers converting the same model at once would replace each other's cache folder. Without xdist (or in
    a worker) this does nothing; the session fixtures below resolve the models as before."""
    if os.environ.get("PYTEST_XDIST_WORKER") or not getattr(session.config.option, "numprocesses", None):
        return
    from toolrl import models

    for name in ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"):
        try:
            models.resolve(name, progress=False)
        except Exception:  # noqa: BLE001 - a missing model package fails in the tests that need it
            pass


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
