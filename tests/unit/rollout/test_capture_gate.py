"""The capture gate: a CUDA graph recording on one thread and an engine step on another never overlap.

Orderings are proven with events and a shared log, never with sleeps or timings.
"""

import threading

import pytest

from toolrl.rollout import capture_gate as cg
from toolrl.rollout import vllm_backend as vlb
from toolrl.rollout.base import GenerationRequest, SamplingParams

from .test_engine_backends import SETTINGS, VLLM_TYPES, FakeLLM


def _thread(fn):
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_a_recording_waits_for_the_step_in_progress_and_the_next_step_waits_for_it():
    gate, log = cg.CaptureGate(), []
    in_step, end_step, recording, end_recording = (threading.Event() for _ in range(4))

    def engine():
        with gate.step():
            log.append("step 1 begins")
            in_step.set()
            end_step.wait(10)
            log.append("step 1 ends")
        recording.wait(10)
        with gate.step():  # the recorder holds the gate: this waits for it
            log.append("step 2 begins")

    def recorder():
        in_step.wait(10)
        with gate.closed():
            log.append("recording begins")
            recording.set()
            end_recording.wait(10)
            log.append("recording ends")

    e = _thread(engine)
    r = _thread(recorder)
    in_step.wait(10)
    # the recorder is waiting for step 1: it has not begun, and it counts as a wait
    end_step.set()
    recording.wait(10)
    assert log == ["step 1 begins", "step 1 ends", "recording begins"]
    assert gate.waits == 1 and gate.is_closed()
    end_recording.set()
    r.join(10)
    e.join(10)
    assert log == ["step 1 begins", "step 1 ends", "recording begins", "recording ends", "step 2 begins"]
    assert not gate.is_closed()


def test_a_thread_that_records_inside_its_own_step_is_not_held_back_by_itself():
    gate, done = cg.CaptureGate(), []

    def engine():
        with gate.step(), gate.closed():  # an engine recording a graph of its own mid-step
            with gate.step():  # and nested steps of the same thread still run
                done.append(True)

    t = _thread(engine)
    t.join(10)
    assert done == [True] and not t.is_alive() and not gate.is_closed()


class FakeGraph:
    """Stands in for torch.cuda.graph: records the gate's state when entered."""

    def __init__(self, gate, fail=False):
        self.gate, self.fail, self.seen = gate, fail, None

    def __enter__(self):
        self.seen = self.gate.is_closed()
        if self.fail:
            raise RuntimeError("capture could not start")
        return self

    def __exit__(self, *exc):
        return False


def test_the_graph_hook_holds_the_gate_while_recording_and_opens_it_on_errors():
    gate = cg.CaptureGate()

    class Graph(FakeGraph):
        pass

    cg.wrap_graph_class(Graph, gate)
    cg.wrap_graph_class(Graph, gate)  # idempotent: one wrapper, not two
    g = Graph(gate)
    with g:
        assert gate.is_closed()
    assert g.seen is True and not gate.is_closed()
    with pytest.raises(RuntimeError, match="capture could not start"):
        with Graph(gate, fail=True):
            pass
    assert not gate.is_closed()
    with pytest.raises(ValueError):
        with Graph(gate):
            raise ValueError("the recorded code failed")
    assert not gate.is_closed()


def test_the_torch_hook_wraps_torch_cuda_graph_once():
    torch = pytest.importorskip("torch")
    assert cg.install_graph_hook() and cg.install_graph_hook()
    assert getattr(torch.cuda.graph.__enter__, "_toolrl_gated", False)


def test_the_vllm_engine_thread_does_not_step_while_the_gate_is_closed():
    """The backend's loop steps inside GATE.step(): with the gate held closed by a 'recording', a submitted
    request is not generated; once the recording ends, it is."""
    llm = FakeLLM()
    backend = vlb.VLLMBackend(SETTINGS, llm=llm, types=VLLM_TYPES)
    try:
        steps = []
        real_step = llm.llm_engine.step
        llm.llm_engine.step = lambda: (steps.append(cg.GATE.is_closed()), real_step())[1]
        req = GenerationRequest(prompt_ids=[5], sampling=SamplingParams(max_tokens=3), request_id="r")
        with cg.GATE.closed():
            handle = backend.submit(req)
            for _ in range(1000):  # the engine thread wakes for the request and stops at the gate
                if cg.GATE.held_steps:
                    break
                threading.Event().wait(0.01)
            assert cg.GATE.held_steps == 1, "the engine thread never waited at the gate"
            assert not handle.future.done() and steps == []  # nothing was generated meanwhile
        result = handle.future.result(timeout=10)
        assert list(result.token_ids) == [6, 7, 8]
        assert steps and not any(steps)  # every step ran with the gate open
    finally:
        backend.close()
