"""`bind_runner_stream`: an in-process vLLM worker's model runner gets the engine thread's stream as its
cached main stream (vLLM 0.25's V2 runner caches the stream current at its warm-up, in the thread that built
the engine, and moves the stepping thread back onto it after every step). The runners here have the same
shape as vLLM's; the real one is exercised on a GPU (tests/gpu/test_vllm_backend.py)."""

import functools
from types import SimpleNamespace

from toolrl.rollout.vllm_backend import bind_runner_stream


class _V2Runner:  # like vllm.v1.worker.gpu.model_runner.GPUModelRunner
    reads = 0

    @functools.cached_property
    def main_stream(self):
        type(self).reads += 1
        return SimpleNamespace(cuda_stream=0x51)  # the maker's stream, cached at the warm-up


class _V1Runner:  # reads the current stream at every step: nothing cached
    pass


def test_v2_runner_main_stream_becomes_the_engine_stream_whether_or_not_it_was_read():
    engine = SimpleNamespace(cuda_stream=0xE0)
    warmed = _V2Runner()
    assert warmed.main_stream.cuda_stream == 0x51  # the warm-up read it
    assert bind_runner_stream(SimpleNamespace(model_runner=warmed), engine) == "0x51"
    assert warmed.main_stream is engine
    fresh = _V2Runner()
    reads = _V2Runner.reads
    assert bind_runner_stream(SimpleNamespace(model_runner=fresh), engine) == "0x0"
    assert fresh.main_stream is engine and _V2Runner.reads == reads  # never computed from the current stream


def test_runners_without_a_cached_main_stream_are_left_alone():
    runner = _V1Runner()
    assert bind_runner_stream(SimpleNamespace(model_runner=runner), object()) == ""
    assert "main_stream" not in vars(runner)
    assert bind_runner_stream(SimpleNamespace(), object()) == ""
