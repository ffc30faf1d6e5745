"""resources.snapshot: real process figures, namespaced by role."""

import time

import pytest

from toolrl.errors import ToolrlError
from toolrl.metrics.resources import snapshot


def test_keys_are_namespaced_and_cpu_only_process_reports_no_gpu():
    m = snapshot("driver")
    assert set(m) >= {"resources/driver/cpu_percent", "resources/driver/rss_mib"}
    assert all(k.startswith("resources/driver/") for k in m)
    assert all(isinstance(v, float) for v in m.values())
    import torch

    if not torch.cuda.is_available():
        assert not any("gpu" in k for k in m)  # no zeros that look like measurements


def test_rss_follows_an_allocation():
    before = snapshot("actor/0")["resources/actor/0/rss_mib"]
    # written with ones, so every page is touched (a zero-filled bytearray comes from calloc: fresh mmap pages
    # that are not resident until written, so RSS did not move in a clean-clone run)
    block = b"\x01" * (256 * 1024 * 1024)
    try:
        during = snapshot("actor/0")["resources/actor/0/rss_mib"]
    finally:
        del block
    assert during - before > 200, (before, during)


def test_cpu_percent_measures_since_the_previous_snapshot():
    snapshot("busy")
    time.sleep(0.3)
    idle = snapshot("busy")["resources/busy/cpu_percent"]
    w0, c0 = time.perf_counter(), time.process_time()
    while time.process_time() - c0 < 0.4:
        pass
    busy = snapshot("busy")["resources/busy/cpu_percent"]
    # the machine may be shared: compare with this process's own CPU/wall ratio over the same span
    expected = 100.0 * (time.process_time() - c0) / (time.perf_counter() - w0)
    assert idle < 20.0, idle
    assert busy == pytest.approx(expected, abs=15.0), (busy, expected)
    assert busy > idle + 15.0, (idle, busy)


@pytest.mark.parametrize("role", ["", "a b", "actor/", "/x", None])
def test_bad_role_says_how_to_fix(role):
    with pytest.raises(ToolrlError, match="letters, digits"):
        snapshot(role)
