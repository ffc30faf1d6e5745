"""The in-process vLLM engine's CUDA stream is never its maker's (no vLLM needed: the stream choice only).

PyTorch hands out streams round-robin from a pool of 32 per priority, so the engine's stream could be the
very stream the trainer thread launches on; the engine's kernels would then queue behind the update's."""

import pytest

torch = pytest.importorskip("torch")


class _InProcessLLM:  # what `engine_in_own_process` reads: no engine core in another process
    llm_engine = None


def test_engine_stream_is_not_the_makers_even_when_the_pool_comes_round_to_it():
    from toolrl.rollout.vllm_backend import _engine_stream

    torch.cuda.init()
    maker = torch.cuda.Stream()
    for _ in range(31):  # the pool's next stream is `maker` again
        torch.cuda.Stream()
    with torch.cuda.stream(maker):
        stream = _engine_stream(_InProcessLLM(), priority=0)
    assert stream is not None and stream.cuda_stream != maker.cuda_stream
    high = _engine_stream(_InProcessLLM(), priority=-1)
    assert high.priority < 0 and high.cuda_stream != torch.cuda.current_stream().cuda_stream
