"""benchmarks/gpu/stack_sampler.py: sampling one named thread's Python stack, on real threads."""

from __future__ import annotations

import threading
import time

import pytest


@pytest.fixture(scope="module")
def ss(load_benchmark):
    with load_benchmark("gpu/stack_sampler.py") as mod:
        yield mod


def _spin(stop: threading.Event) -> None:
    while not stop.is_set():
        _busy_inner()


def _busy_inner() -> None:
    t = time.perf_counter()
    while time.perf_counter() - t < 0.002:
        pass


def _sleeper(stop: threading.Event) -> None:
    while not stop.is_set():
        time.sleep(0.001)


def test_samples_only_the_named_thread_and_finds_its_hot_function(ss):
    stop = threading.Event()
    busy = threading.Thread(target=_spin, args=(stop,), name="the-engine", daemon=True)
    other = threading.Thread(target=_sleeper, args=(stop,), name="someone-else", daemon=True)
    busy.start(), other.start()
    try:
        with ss.StackSampler("the-engine", interval_s=0.002) as s:
            time.sleep(0.4)
    finally:
        stop.set()
        busy.join(), other.join()
    out = s.summary()
    assert out["samples"] >= 20 and out["thread"] == "the-engine"
    inclusive = dict(out["inclusive"])
    spin = "unit/test_stack_sampler.py:_spin"
    assert inclusive[spin] == pytest.approx(1.0)  # every sample is inside the thread's target
    assert not any("_sleeper" in k for k in inclusive)  # the other thread is never sampled
    assert dict(out["self"]).get("unit/test_stack_sampler.py:_busy_inner", 0) > 0.5
    assert out["seconds"] >= 0.35
    # the hot function's path names the caller it was reached from
    top_path, share = out["paths"][0]
    assert top_path.startswith("unit/test_stack_sampler.py:_busy_inner < unit/test_stack_sampler.py:_spin") and share > 0.5


def test_a_missing_thread_is_counted_not_sampled(ss):
    with ss.StackSampler("no-such-thread", interval_s=0.002) as s:
        time.sleep(0.05)
    out = s.summary()
    assert out["samples"] == 0 and out["missing"] > 0 and out["self"] == [] and out["inclusive"] == [] and out["paths"] == []
