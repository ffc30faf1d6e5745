"""resources.snapshot: real process figures, namespaced by role."""

import subprocess
import sys
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
    """In a fresh process. Inside the full suite's long-lived pytest process (7.9 GB resident after the
    integration tests) two clean-clone runs read the same RSS before and during the allocation, to the byte;
    the likely reason is that the allocator reused freed pages that were still resident, so no new page was
    faulted in (not confirmed). Alone, after torch work and after a Ray start, it moves as it should."""
    code = (
        "from toolrl.metrics.resources import snapshot\n"
        "before = snapshot('actor/0')['resources/actor/0/rss_mib']\n"
        "block = b'\\x01' * (256 * 1024 * 1024)  # written, so every page is resident\n"
        "during = snapshot('actor/0')['resources/actor/0/rss_mib']\n"
        "print(before, during)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    before, during = map(float, out.stdout.split())
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


def test_gc_seconds_and_full_collections_count_since_the_previous_snapshot():
    """A fresh process, so no other test's objects or collections count: a large graph of cyclic objects makes
    each full collection take milliseconds; the snapshot after two of them reports both and their time, the next
    one (no collection between) none, and gc_pauses() keeps the cumulative totals."""
    code = (
        "import gc, json, time\n"
        "from toolrl.metrics.resources import snapshot, gc_pauses\n"
        "first = snapshot('driver')\n"
        "junk = []\n"
        "for i in range(300_000):\n"
        "    a = [i]; a.append(a); junk.append(a)  # cycles the collector must traverse\n"
        "t0 = time.perf_counter(); gc.collect(); gc.collect(); wall = time.perf_counter() - t0\n"
        "after = snapshot('driver')\n"
        "gc.disable()\n"
        "quiet = snapshot('driver')\n"
        "print(json.dumps([first, after, quiet, wall, gc_pauses()]))\n"
    )
    import json

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    first, after, quiet, wall, totals = json.loads(out.stdout)
    k_s, k_full = "resources/driver/gc_seconds", "resources/driver/gc_full_collections"
    assert first[k_s] == 0.0 and first[k_full] == 0.0
    assert after[k_full] >= 2  # the two explicit ones (and any the allocations triggered)
    assert 0.5 * wall <= after[k_s], (after[k_s], wall)  # the two explicit collections alone took `wall`
    assert quiet[k_s] == 0.0 and quiet[k_full] == 0.0
    assert totals[0] == pytest.approx(after[k_s], rel=1e-9) and totals[1] == after[k_full]
