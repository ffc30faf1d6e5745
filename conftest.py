"""Shared fixtures. Entry-point plugins are off under tests, so a stray
installed plugin cannot change results; tests that need them start a
subprocess without TOOLRL_NO_ENTRYPOINTS."""

import os
from collections import OrderedDict

os.environ.setdefault("TOOLRL_NO_ENTRYPOINTS", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two test processes on the machine's cores (pytest-xdist): idle OpenMP threads of
    # torch sleep instead of spinning on a core the other process needs (as toolrl's Ray workers do)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402


# The files whose tests train through Ray or hold several full SmolLM2 copies (trainer, reference, engines,
# optimizer state): 5-10 GB each. Under pytest-xdist they form one group, run one after the other on one
# worker, so two of them never overlap (two at once reached Ray's out-of-memory kill threshold, 95% of the
# 24 GiB machine, once a third process ran beside them); the other worker runs every other file.
MEMORY_HEAVY = frozenset(f"tests/integration/{name}.py" for name in (
    "test_train_ray", "test_async_train_ray", "test_ray_cluster", "test_train_data_parallel",
    "test_train_algorithms", "test_train_resume", "test_demo", "test_async_train", "test_train_offline"))


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` (make test), with MEMORY_HEAVY as one unit: a file's tests run on one worker (its
    module fixtures are started once), and the memory-heavy files one after the other on one worker.
    (Not xdist_group marks: pytest 9.2 derives item.nodeid from item._id, so xdist 3.8's loadgroup, which
    appends the group to item._nodeid, groups nothing.)"""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class MemoryAwareFileScheduling(LoadFileScheduling):
        def __init__(self, config, log=None):
            super().__init__(config, log)
            self.workqueue = HeavyFirstQueue()

        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return HEAVY_UNIT if path in MEMORY_HEAVY else path

    return MemoryAwareFileScheduling(config, log)


HEAVY_UNIT = "memory-heavy"


class HeavyFirstQueue(OrderedDict):
    """xdist's queue of work units with the memory-heavy unit always first: the first worker starts on it
    at once and the other worker takes every other file meanwhile. (xdist orders the units by test count;
    the heavy unit, about half of the suite's time, then started late and its worker ran alone at the end:
    1592 s against 1331 s for plain loadfile.)"""

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        if key == HEAVY_UNIT:
            self.move_to_end(key, last=False)


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

