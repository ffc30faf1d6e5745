"""Where an overlapped training step's time goes: one step under torch.profiler, its chrome trace summarised.

    python3 benchmarks/gpu/grpo_vs_trl.py --tokenizer /root/qwen_tok --sizes 256 --steps 5 \\
        --systems "toolrl_async_share+profile_step=4" --out $OUT/trace.json

(`profile_step=K` profiles step K of a toolrl system; the summary lands in the result under `profile`.)

`summarize(trace)` reads the trace's events:
- CUDA kernels (`"cat": "kernel"`, `args.stream`): per stream, the time it ran kernels (the union of its
  kernels' intervals) and the kernel count; over all streams, the time the GPU ran any kernel and the time
  it ran kernels of two or more streams at once. In an asynchronous step the engine's stream and the
  update's stream are told apart by their kernel counts and names (`top_kernels`).
- CPU operators (`"cat": "cpu_op"`, per thread id): per thread, the time spent inside operators (the union,
  so nested operators count once). torch.profiler records the operators of the thread that runs it, not
  those of threads already running (the engine's), so the next item is what compares the threads.

`thread_cpu()` reads every thread's CPU time from /proc (Linux); the difference of two readings around a
step (`cpu_delta`) gives each thread's CPU seconds in it, named. Threads of one process whose CPU seconds
add up to about the step's wall time, each well below it, are taking turns rather than running side by
side (the interpreter lock is one cause).

The question it answers (docs/BENCHMARKS.md, fifth sitting): with the update on a share of the SMs, why
do the overlapped rollout and update still take about as long as one after the other?
"""
from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def union_seconds(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length covered by (start, end) intervals in microseconds, returned in seconds."""
    total, cur_start, cur_end = 0.0, None, None
    for start, end in sorted(intervals):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total / 1e6


def concurrent_seconds(per_stream: Mapping[Any, Sequence[tuple[float, float]]], at_least: int = 2) -> float:
    """Seconds during which kernels of at least `at_least` different streams ran at once."""
    edges: list[tuple[float, int, Any]] = []
    for stream, intervals in per_stream.items():
        for start, end in intervals:
            if end > start:
                edges += [(start, 1, stream), (end, -1, stream)]
    edges.sort(key=lambda e: (e[0], e[1]))  # ends before starts at the same instant
    active: dict[Any, int] = defaultdict(int)
    total, since = 0.0, None
    for t, delta, stream in edges:
        busy_before = sum(1 for v in active.values() if v > 0)
        active[stream] += delta
        busy_after = sum(1 for v in active.values() if v > 0)
        if busy_before < at_least <= busy_after:
            since = t
        elif busy_before >= at_least > busy_after and since is not None:
            total += t - since
            since = None
    return total / 1e6


def summarize(trace: Mapping[str, Any], top: int = 8) -> dict[str, Any]:
    """The summary described in the module docstring, from a chrome trace (`prof.export_chrome_trace`)."""
    events = trace.get("traceEvents", trace) if isinstance(trace, Mapping) else trace
    kernels: dict[Any, list[tuple[float, float]]] = defaultdict(list)
    names: dict[Any, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    ops: dict[Any, list[tuple[float, float]]] = defaultdict(list)
    first, last = float("inf"), float("-inf")
    for ev in events:
        if ev.get("ph") != "X" or "dur" not in ev:
            continue
        start, end = float(ev["ts"]), float(ev["ts"]) + float(ev["dur"])
        cat = ev.get("cat", "")
        if cat == "kernel":
            stream = (ev.get("args") or {}).get("stream", ev.get("tid"))
            kernels[stream].append((start, end))
            names[stream][ev.get("name", "?")] += float(ev["dur"]) / 1e6
        elif cat == "cpu_op":
            ops[ev.get("tid")].append((start, end))
        else:
            continue
        first, last = min(first, start), max(last, end)
    window = (last - first) / 1e6 if last > first else 0.0
    streams = {
        str(s): {"busy_s": union_seconds(iv), "kernels": len(iv),
                 "top_kernels": [[n[:100], round(sec, 4)] for n, sec in
                                 sorted(names[s].items(), key=lambda kv: -kv[1])[:top]]}
        for s, iv in sorted(kernels.items(), key=lambda kv: -len(kv[1]))
    }
    threads = {str(t): {"op_busy_s": union_seconds(iv), "ops": len(iv)}
               for t, iv in sorted(ops.items(), key=lambda kv: -len(kv[1]))}
    return {
        "window_s": window,
        "gpu_busy_s": union_seconds(iv for ivs in kernels.values() for iv in ivs),
        "gpu_two_streams_s": concurrent_seconds(kernels),
        "streams": streams,
        "cpu_threads": threads,
    }


def thread_cpu(pid: int | str = "self") -> dict[str, tuple[str, float]]:
    """{thread id: (thread name, CPU seconds so far)} for every thread of a process, from /proc. In this
    process a Python thread is named by its `threading` name (the OS name is the interpreter's)."""
    import threading

    named = {str(t.native_id): t.name for t in threading.enumerate()} if pid == "self" else {}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, tuple[str, float]] = {}
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/stat") as fh:
                stat = fh.read()
            with open(f"{base}/{tid}/comm") as fh:
                name = fh.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; utime, stime are fields 14, 15
        out[tid] = (named.get(tid, name), (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_delta(before: Mapping[str, tuple[str, float]], after: Mapping[str, tuple[str, float]],
              min_s: float = 0.01) -> list[dict[str, Any]]:
    """Per thread, the CPU seconds between two `thread_cpu` readings (threads using at least `min_s`), busiest
    first."""
    rows = [{"tid": tid, "name": name, "cpu_s": cpu - before.get(tid, (name, 0.0))[1]}
            for tid, (name, cpu) in after.items()]
    return sorted((r for r in rows if r["cpu_s"] >= min_s), key=lambda r: -r["cpu_s"])
