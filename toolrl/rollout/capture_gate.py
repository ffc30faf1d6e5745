"""Keeps an in-process engine thread's CUDA calls out of another thread's CUDA graph recording.

    from toolrl.rollout.capture_gate import GATE, install_graph_hook
    install_graph_hook()              # once: every `torch.cuda.graph(...)` recording closes the gate
    with GATE.step():                 # the engine thread, around each step of its loop
        engine.step()
    with GATE.closed():               # what the hook does around a recording (on the recording thread)
        ...

In asynchronous mode the colocated vLLM engine decodes on its own thread while the trainer thread runs the
update; with `trainer.compile_mode=reduce-overhead` the update's layers are CUDA graphs, which PyTorch's
graph trees record (`torch.cuda.graph`, capture mode "thread_local") the first times a shape or a pass
(update, or the no-gradient logprob pass) comes up, sometimes while the engine is mid-step. CUDA allows
other threads to call it during a thread-local capture, but not everything they do is safe then (the
capture's stream, events and the caching allocator's pools are shared by the whole process). In the
tenth GPU sitting one asynchronous run with a short interpreter switch interval (1 ms) died with "an
illegal memory access" at step 2, the first step with a no-gradient recording beside the engine's
decoding; the same configuration ran clean in every other run. This gate takes that interleaving away:
a recording waits until the engine thread is between two steps and the engine waits until the recording
ends. Recordings happen a few times per run (tens of milliseconds to seconds each), so the overlap lost
is small.

A thread that records while inside `GATE.step()` (an engine recording a graph of its own mid-step) is not
held back by its own step: the gate never waits on the thread that holds it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)


class CaptureGate:
    """Steps (any number at once) exclude recordings, and recordings exclude steps; recordings go first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._closed = 0  # recordings running or waiting
        self._stepping: dict[int, int] = {}  # thread id -> nested step count
        self.waits = 0  # how often a recording waited for a step to end (for tests and logs)
        self.held_steps = 0  # steps waiting right now for a recording to end

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._closed and me not in self._stepping:
                self.held_steps += 1
                while self._closed:
                    self._cond.wait()
                self.held_steps -= 1
            self._stepping[me] = self._stepping.get(me, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                left = self._stepping[me] - 1
                if left:
                    self._stepping[me] = left
                else:
                    del self._stepping[me]
                self._cond.notify_all()

    @contextlib.contextmanager
    def closed(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            self._closed += 1
            if any(t != me for t in self._stepping):
                self.waits += 1
                while any(t != me for t in self._stepping):
                    self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._closed -= 1
                self._cond.notify_all()

    def is_closed(self) -> bool:
        with self._cond:
            return self._closed > 0


GATE = CaptureGate()
_installed = False
_install_lock = threading.Lock()


def wrap_graph_class(graph_cls: Any, gate: CaptureGate = GATE) -> None:
    """Make `graph_cls` (torch.cuda.graph's context-manager class) hold `gate` closed while it records."""
    enter, exit_ = graph_cls.__enter__, graph_cls.__exit__
    if getattr(enter, "_toolrl_gated", False):
        return

    def __enter__(self: Any) -> Any:
        held = gate.closed()
        held.__enter__()
        self._toolrl_gate = held
        try:
            return enter(self)
        except BaseException:
            self._toolrl_gate = None
            held.__exit__(None, None, None)
            raise

    def __exit__(self: Any, *exc: Any) -> Any:
        try:
            return exit_(self, *exc)
        finally:
            held, self._toolrl_gate = getattr(self, "_toolrl_gate", None), None
            if held is not None:
                held.__exit__(None, None, None)

    __enter__._toolrl_gated = True  # type: ignore[attr-defined]
    graph_cls.__enter__, graph_cls.__exit__ = __enter__, __exit__


def install_graph_hook() -> bool:
    """Gate every `torch.cuda.graph(...)` recording in this process (idempotent). False without torch.cuda."""
    global _installed
    with _install_lock:
        if _installed:
            return True
        try:
            from torch.cuda import graphs
        except ImportError:
            return False
        wrap_graph_class(graphs.graph)
        _installed = True
        logger.info("CUDA graph recordings now wait for the in-process engine thread to finish its step")
        return True
