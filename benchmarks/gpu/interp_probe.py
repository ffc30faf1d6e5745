"""A stand-in for the colocated engine's thread: how often it gets Python's interpreter lock while something
else runs in the process (the update, in `update_profile.py --probe`).

    with InterpreterProbe(device="cuda") as probe:
        update_policy(...)
    probe.summary()   # {"steps": ..., "steps_per_s": ..., "median_ms": ..., "p90_ms": ..., "max_ms": ...}

Each probe step is what a decode step does on the CPU, in miniature: `python_ms` of pure-Python work (which
needs the lock), then a small matmul on a CUDA stream of its own and a wait for it (which releases the lock,
as vLLM's wait for the sampled tokens does). Alone, a step takes about `python_ms` plus the kernel; beside a
thread that holds the lock, each step waits for it (up to the interpreter's switch interval), and beside
one that needs the lock often, that thread is the one that waits (what `--probe` measured on the H200: the
update slowed, the probe barely did). On the CPU the kernel is a short sleep.
"""
from __future__ import annotations

import statistics
import threading
import time


class InterpreterProbe:
    def __init__(self, device: str = "cuda", python_ms: float = 0.5):
        self.device = device
        self.python_s = python_ms / 1000
        self.durations: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> InterpreterProbe:
        self._thread = threading.Thread(target=self._run, name="interp-probe", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            wait = self._gpu_wait() if self.device.startswith("cuda") else (lambda: time.sleep(0.0001))
            while not self._stop.is_set():
                t = time.perf_counter()
                while time.perf_counter() - t < self.python_s:  # interpreter work: holds the lock
                    pass
                wait()  # a kernel and a wait with the lock released
                self.durations.append(time.perf_counter() - t)
        except BaseException as e:  # surfaced in __exit__
            self._error = e

    def _gpu_wait(self):
        import torch

        stream = torch.cuda.Stream(device=self.device)
        with torch.cuda.stream(stream):
            x = torch.randn(256, 896, device=self.device, dtype=torch.bfloat16)
            w = torch.randn(896, 896, device=self.device, dtype=torch.bfloat16)

        def wait():
            with torch.cuda.stream(stream):
                x @ w
            stream.synchronize()

        return wait

    def summary(self) -> dict:
        d = sorted(self.durations)
        if not d:
            return {"steps": 0}
        total = sum(d)
        return {"steps": len(d), "steps_per_s": len(d) / total, "median_ms": 1000 * statistics.median(d),
                "p90_ms": 1000 * d[int(0.9 * (len(d) - 1))], "max_ms": 1000 * d[-1]}
