"""benchmarks/gpu/interp_probe.py on the CPU: the stand-in for the engine thread steps quickly alone and waits
for the interpreter's switch interval beside a thread that holds the lock (the effect it measures on the GPU)."""

import sys
import time

import pytest


@pytest.fixture
def probe(load_benchmark):
    with load_benchmark("gpu/interp_probe.py") as mod:
        yield mod


@pytest.fixture
def long_switch():
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.02)  # 20 ms: a contrast no load on the machine can blur
    yield
    sys.setswitchinterval(before)


def _spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_probe_steps_fast_alone_and_at_the_switch_interval_beside_a_lock_holder(probe, long_switch):
    with probe.InterpreterProbe(device="cpu", python_ms=0.5) as alone:
        time.sleep(0.5)  # the lock is free while this thread sleeps
    with probe.InterpreterProbe(device="cpu", python_ms=0.5) as beside:
        _spin(1.0)  # pure Python: holds the lock until the interpreter forces a switch
    a, b = alone.summary(), beside.summary()
    assert a["steps"] > 20 and a["median_ms"] < 10
    assert b["steps"] >= 5 and b["median_ms"] >= 15  # each step waited about one switch interval for the lock
    assert set(b) == {"steps", "steps_per_s", "median_ms", "p90_ms", "max_ms"}


def test_an_error_in_the_probe_thread_is_raised_on_exit(probe):
    p = probe.InterpreterProbe(device="cuda:99")  # no such device (and no CUDA here): the thread fails at once
    with pytest.raises(Exception):
        with p:
            time.sleep(0.1)
