"""benchmarks/gpu/step_trace.py, the summary of a profiled step's chrome trace: interval unions, the time two
streams run at once, per-thread operator time; on hand-made traces and on a real torch.profiler trace."""

from __future__ import annotations

import json
import threading
import time

import pytest


@pytest.fixture(scope="module")
def st(load_benchmark):
    with load_benchmark("gpu/step_trace.py") as mod:
        yield mod


def test_union_counts_overlaps_and_nesting_once(st):
    assert st.union_seconds([]) == 0
    assert st.union_seconds([(0, 1e6), (0.5e6, 2e6), (3e6, 4e6)]) == pytest.approx(3.0)
    assert st.union_seconds([(0, 10e6), (2e6, 3e6), (4e6, 5e6)]) == pytest.approx(10.0)  # nested
    assert st.union_seconds([(5e6, 6e6), (0, 1e6), (1e6, 2e6)]) == pytest.approx(3.0)  # unsorted, touching


def test_concurrent_seconds_counts_only_different_streams(st):
    per_stream = {7: [(0, 4e6), (5e6, 6e6)], 13: [(3e6, 5.5e6)], 21: [(10e6, 11e6)]}
    # 7 and 13 overlap on [3, 4] and [5, 5.5]; 21 runs alone
    assert st.concurrent_seconds(per_stream) == pytest.approx(1.5)
    assert st.concurrent_seconds(per_stream, at_least=3) == 0
    # two kernels of one stream overlapping (nested records) are not two streams
    assert st.concurrent_seconds({7: [(0, 4e6), (1e6, 2e6)]}) == 0


def _kernel(stream, ts, dur, name="k"):
    return {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur, "args": {"stream": stream}}


def test_summarize_a_hand_made_overlapped_step(st):
    events = [_kernel(7, 0, 2e6, "gemm"), _kernel(7, 3e6, 1e6, "gemm"), _kernel(20, 1e6, 3e6, "decode"),
              {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 1e6, "tid": 1},
              {"ph": "X", "cat": "cpu_op", "name": "aten::addmm", "ts": 0.2e6, "dur": 0.3e6, "tid": 1},
              {"ph": "X", "cat": "cpu_op", "name": "aten::add", "ts": 2e6, "dur": 2e6, "tid": 2},
              {"ph": "i", "cat": "cpu_op", "name": "marker", "ts": 9e6},  # not a duration event
              {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 0, "dur": 1}]
    out = st.summarize({"traceEvents": events})
    assert out["window_s"] == pytest.approx(4.0)
    assert out["gpu_busy_s"] == pytest.approx(4.0)
    assert out["gpu_two_streams_s"] == pytest.approx(2.0)  # [1, 2] and [3, 4]
    assert out["streams"]["7"]["busy_s"] == pytest.approx(3.0) and out["streams"]["7"]["kernels"] == 2
    assert out["streams"]["20"]["top_kernels"] == [["decode", 3.0]]
    assert out["cpu_threads"]["1"] == {"op_busy_s": pytest.approx(1.0), "ops": 2}
    assert out["cpu_threads"]["2"]["op_busy_s"] == pytest.approx(2.0)


def test_summarize_a_real_profiler_trace(st, tmp_path):
    torch = pytest.importorskip("torch")
    from torch.profiler import ProfilerActivity, profile

    a = torch.randn(256, 256)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(50):
            a @ a
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    out = st.summarize(json.loads(path.read_text()))
    assert out["gpu_busy_s"] == 0 and out["streams"] == {}
    (thread,) = out["cpu_threads"].values()  # the profiling thread's operators
    assert thread["ops"] >= 50 and 0 < thread["op_busy_s"] <= out["window_s"] + 1e-9


def test_thread_cpu_tells_a_busy_thread_from_a_sleeping_one(st):
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(range(1000))

    def nap():
        stop.wait()

    busy = threading.Thread(target=spin, name="bench-spin")
    idle = threading.Thread(target=nap, name="bench-nap")
    busy.start(), idle.start()
    try:
        before = st.thread_cpu()
        deadline = time.perf_counter() + 0.5
        while time.perf_counter() < deadline:
            time.sleep(0.05)
        after = st.thread_cpu()
    finally:
        stop.set()
        busy.join(), idle.join()
    rows = {r["name"]: r["cpu_s"] for r in st.cpu_delta(before, after, min_s=0.0)}
    assert rows["bench-spin"] >= 0.1  # it had the interpreter for much of the half second
    assert rows.get("bench-nap", 0.0) < 0.05
    assert all(r["cpu_s"] >= 0.01 for r in st.cpu_delta(before, after))
