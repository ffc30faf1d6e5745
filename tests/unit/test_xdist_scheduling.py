"""The root conftest's pytest-xdist scheduler (`make test` runs two workers): the memory-heavy training files
form one work unit, the first one handed out, so one worker runs them from the start while the other takes
every other file; each other file stays on one worker."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]


def _root_conftest():
    spec = importlib.util.spec_from_file_location("toolrl_root_conftest", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class RecordingNode:
    """A stand-in for xdist's WorkerController: records the test indexes it is sent."""

    def __init__(self, name: str):
        self.name = name
        self.gateway = SimpleNamespace(id=name)
        self.sent: list[int] = []
        self.shutting_down = False

    def send_runtest_some(self, indexes):
        self.sent.extend(indexes)

    def shutdown(self):
        self.shutting_down = True


def _scheduler(conftest, dist: str = "loadfile"):
    config = SimpleNamespace(getoption=lambda name: dist, getvalue=lambda name: ["2*popen"],
                             option=SimpleNamespace(loadscopereorder=True))
    return conftest.pytest_xdist_make_scheduler(config, None)


def test_the_memory_heavy_unit_goes_first_to_one_worker_and_files_stay_whole():
    conftest = _root_conftest()
    heavy = sorted(conftest.MEMORY_HEAVY)
    # light files with more tests than the heavy unit: xdist alone would hand them out first
    collection = [f"tests/unit/test_big_{i}.py::test_{j}" for i in range(3) for j in range(20)]
    collection += [f"{heavy[0]}::test_a", f"{heavy[1]}::test_b", f"{heavy[0]}::test_c"]
    collection += [f"tests/unit/test_small.py::test_{j}" for j in range(2)]

    sched = _scheduler(conftest)
    nodes = [RecordingNode("gw0"), RecordingNode("gw1")]
    for node in nodes:
        sched.add_node(node)
    for node in nodes:
        sched.add_node_collection(node, collection)
    sched.schedule()

    first = nodes[0].sent
    heavy_ids = [i for i, nodeid in enumerate(collection) if nodeid.split("::")[0] in conftest.MEMORY_HEAVY]
    assert first[:len(heavy_ids)] == heavy_ids, "the first worker starts on the memory-heavy files"
    assert not set(heavy_ids) & set(nodes[1].sent), "the memory-heavy files never run on the other worker"
    for node in nodes:  # every file's tests stay together on one worker
        files = {collection[i].split("::")[0] for i in node.sent}
        other = nodes[1] if node is nodes[0] else nodes[0]
        assert not files & {collection[i].split("::")[0] for i in other.sent}


def test_the_scheduler_is_used_only_for_loadfile():
    conftest = _root_conftest()
    assert _scheduler(conftest, dist="load") is None
    assert _scheduler(conftest, dist="no") is None


def test_the_heavy_queue_keeps_the_heavy_unit_first_whenever_it_is_added():
    conftest = _root_conftest()
    queue = conftest.HeavyFirstQueue()
    queue["a.py"] = {}
    queue[conftest.HEAVY_UNIT] = {}
    queue["b.py"] = {}
    assert list(queue) == [conftest.HEAVY_UNIT, "a.py", "b.py"]
    assert queue.popitem(last=False)[0] == conftest.HEAVY_UNIT
    assert list(queue) == ["a.py", "b.py"]
