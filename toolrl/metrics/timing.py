"""Wall-clock time per phase of a step (`timing/<phase>` metrics, seconds)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - t0)

    def add(self, phase: str, seconds: float) -> None:
        """Count `seconds` to `phase` (time measured elsewhere, e.g. one rollout shared by several steps)."""
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def metrics(self, prefix: str = "timing/") -> dict[str, float]:
        out = {f"{prefix}{k}": v for k, v in self.seconds.items()}
        out[f"{prefix}step"] = time.perf_counter() - self._start
        return out
