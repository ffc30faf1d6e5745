"""Resource metrics of the calling process: `resources/<role>/…`.

`snapshot(role)` is cheap (no sleeping, no subprocess) and safe to call once a
step from any process — the driver, a Ray actor, a rollout server. Each process
reports its own figures under its role, so a step's metrics from several actors
merge without collisions:

    resources/<role>/cpu_percent            CPU use since this process's previous snapshot
                                            (100 = one core busy; 0.0 on the first call)
    resources/<role>/rss_mib                resident memory
    resources/<role>/gpu_mem_allocated_mib  torch's allocated CUDA memory (current device)
    resources/<role>/gpu_mem_reserved_mib   memory held by torch's caching allocator
    resources/<role>/gpu_mem_peak_mib       peak allocated since the previous snapshot
    resources/<role>/gpu_utilization        percent of time a kernel ran (nvidia-ml-py)
    resources/<role>/gc_seconds             time in Python's garbage collector since this process's previous
                                            snapshot (every thread: a collection holds the interpreter lock,
                                            so an engine thread waits through it too; 0.0 on the first call)
    resources/<role>/gc_full_collections    generation-2 (full) collections since the previous snapshot

The GPU keys appear only where CUDA is initialised in this process (a CPU-only
process reports none, instead of zeros that look like measurements); the
utilisation key needs the `nvidia-ml-py` package (`pip install nvidia-ml-py`).

Example::

    >>> from toolrl.metrics.resources import snapshot
    >>> m = snapshot("driver")
    >>> m["resources/driver/rss_mib"] > 0
    True
"""

from __future__ import annotations

import gc
import logging
import os
import re
import sys
import time

from toolrl.errors import ToolrlError

logger = logging.getLogger(__name__)

_MIB = 1024.0 * 1024.0
_ROLE = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")
_process = None  # psutil.Process of this pid, kept so cpu_percent measures since the last call
_process_pid: int | None = None
_warned: set[str] = set()


class _GCClock:
    """Totals of the collector's pauses in this process, from `gc.callbacks` (installed on first use)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._started = 0.0
        self._pid: int | None = None
        self._last = (0.0, 0)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self.seconds += time.perf_counter() - self._started
            self._started = 0.0
            self.full += info.get("generation") == 2

    def totals(self) -> tuple[float, int]:
        """Seconds spent collecting and full collections since this process first asked."""
        if self._pid != os.getpid():  # first use, or a forked child: count from now, in this process
            if self._callback not in gc.callbacks:
                gc.callbacks.append(self._callback)
            self.seconds, self.full, self._started, self._pid = 0.0, 0, 0.0, os.getpid()
            self._last = (0.0, 0)
        return self.seconds, self.full

    def since_last(self) -> tuple[float, int]:
        seconds, full = self.totals()
        out = (seconds - self._last[0], full - self._last[1])
        self._last = (seconds, full)
        return out


GC_CLOCK = _GCClock()


def gc_pauses() -> tuple[float, int]:
    """Cumulative (seconds in the garbage collector, full collections) of this process since the first call.

    For timing a piece of work: call before and after and subtract (benchmarks/gpu/rollout_vs_llm.py does).
    """
    return GC_CLOCK.totals()


def _warn_once(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.info(msg)


def _proc():
    global _process, _process_pid
    try:
        import psutil
    except ImportError:
        _warn_once("psutil", "psutil is not installed: resources/*/cpu_percent and rss_mib are not reported "
                   "(pip install psutil)")
        return None
    pid = os.getpid()
    if _process is None or _process_pid != pid:  # a forked child must not reuse its parent's handle
        _process, _process_pid = psutil.Process(pid), pid
        _process.cpu_percent(interval=None)  # primes the counter; the first reading is 0.0
    return _process


def _host(prefix: str) -> dict[str, float]:
    p = _proc()
    if p is None:
        return {}
    return {
        f"{prefix}cpu_percent": float(p.cpu_percent(interval=None)),
        f"{prefix}rss_mib": p.memory_info().rss / _MIB,
    }


def _gpu(prefix: str) -> dict[str, float]:
    torch = sys.modules.get("torch")  # never import torch (or initialise CUDA) just to measure
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    dev = torch.cuda.current_device()
    out = {
        f"{prefix}gpu_mem_allocated_mib": torch.cuda.memory_allocated(dev) / _MIB,
        f"{prefix}gpu_mem_reserved_mib": torch.cuda.memory_reserved(dev) / _MIB,
        f"{prefix}gpu_mem_peak_mib": torch.cuda.max_memory_allocated(dev) / _MIB,
    }
    torch.cuda.reset_peak_memory_stats(dev)
    try:
        import pynvml  # noqa: F401  (the nvidia-ml-py distribution; torch.cuda.utilization uses it)
    except ImportError:
        _warn_once("pynvml", "nvidia-ml-py is not installed: resources/*/gpu_utilization is not reported "
                   "(pip install nvidia-ml-py)")
        return out
    try:
        # torch maps the device through CUDA_VISIBLE_DEVICES to the NVML index
        out[f"{prefix}gpu_utilization"] = float(torch.cuda.utilization(dev))
    except Exception as e:  # NVML can be absent in containers even with the package installed
        _warn_once("nvml", f"GPU utilisation unavailable: {e}")
    return out


def snapshot(role: str) -> dict[str, float]:
    """Resource metrics of this process, named `resources/<role>/<metric>`.

    Args:
        role: who is measuring, e.g. ``"driver"``, ``"actor"``, ``"rollout_0"``;
            letters, digits, ``_.-`` and ``/`` between parts.

    Returns:
        A flat dict of floats (see the module docstring for the keys). Keys whose
        source is missing (no psutil, no CUDA, no nvidia-ml-py) are left out.
    """
    if not isinstance(role, str) or not _ROLE.match(role):
        raise ToolrlError(
            f"resource role {role!r} is not a metric-name part",
            where="toolrl.metrics.resources.snapshot(role)",
            fix="use letters, digits, '_', '.', '-' (and '/' between parts), e.g. 'actor' or 'rollout_0'",
        )
    prefix = f"resources/{role}/"
    out = _host(prefix)
    out.update(_gpu(prefix))
    seconds, full = GC_CLOCK.since_last()
    out[f"{prefix}gc_seconds"] = seconds
    out[f"{prefix}gc_full_collections"] = float(full)
    return out
