"""The sglang backend on a real GPU with SGLang installed (tiny random Qwen2).

Checks: generation from token ids (skip_tokenizer_init) with per-token logprobs that match a
HF teacher-forced forward; the stop token kept in the output; greedy batch == single;
streaming and abort; update_weights changes the output and the logprobs follow the new weights.

float32 with SGLang's torch_native attention by default; set TOOLRL_GPU_TEST_DTYPE=bfloat16
(tolerance 5e-2) if that backend is unavailable.
"""

import asyncio
import os

import pytest

pytest.importorskip("sglang")

from toolrl.rollout.base import BackendSettings, GenerationRequest, SamplingParams  # noqa: E402

PROMPTS = [tuple(range(10, 10 + n)) for n in (5, 17, 3, 40)]
DTYPE = os.environ.get("TOOLRL_GPU_TEST_DTYPE", "float32")
ATOL = 2e-3 if DTYPE == "float32" else 5e-2


@pytest.fixture(scope="module")
def backend(tiny_qwen2):
    from toolrl.rollout.sglang_backend import SGLangBackend

    extra = {"mem_fraction_static": 0.3, "disable_cuda_graph": True, "context_length": 1024}
    if DTYPE == "float32":
        extra["attention_backend"] = "torch_native"
    b = SGLangBackend(BackendSettings(model_path=str(tiny_qwen2), dtype=DTYPE, max_batch_size=8, seed=0, extra=extra))
    yield b
    b.close()


def _close(got, ref):
    return max(abs(a - b) for a, b in zip(got, ref)) < ATOL


def test_generate_from_ids_with_logprobs_matching_hf(backend, tiny_qwen2, gpu_helpers):
    import torch

    dtype = getattr(torch, DTYPE)
    reqs = [GenerationRequest(p, SamplingParams(temperature=1.0, max_tokens=24, seed=i)) for i, p in enumerate(PROMPTS)]
    for req, res in zip(reqs, backend.generate(reqs)):
        assert 0 < len(res.token_ids) <= 24 and len(res.logprobs) == len(res.token_ids)
        assert res.finish_reason in ("stop", "length")
        assert _close(res.logprobs, gpu_helpers.hf_logprobs(tiny_qwen2, req.prompt_ids, res.token_ids, dtype=dtype))


def test_temperature_scaled_logprobs_and_greedy_batch_equals_single(backend, tiny_qwen2, gpu_helpers):
    import torch

    [hot] = backend.generate([GenerationRequest(PROMPTS[1], SamplingParams(temperature=0.6, max_tokens=16, seed=7))])
    ref = gpu_helpers.hf_logprobs(tiny_qwen2, PROMPTS[1], hot.token_ids, temperature=0.6, dtype=getattr(torch, DTYPE))
    assert _close(hot.logprobs, ref)
    greedy = [GenerationRequest(p, SamplingParams(temperature=0.0, max_tokens=16)) for p in PROMPTS]
    batch = backend.generate(greedy)
    assert [r.token_ids for r in batch] == [backend.generate([g])[0].token_ids for g in greedy]


def test_stop_token_is_kept(backend):
    [free] = backend.generate([GenerationRequest(PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=20))])
    stop = free.token_ids[5]
    [cut] = backend.generate([GenerationRequest(PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=20,
                                                                           stop_token_ids=(stop,)))])
    assert cut.finish_reason == "stop" and cut.token_ids[-1] == stop
    assert cut.token_ids == free.token_ids[: len(cut.token_ids)]


def test_stream_and_abort(backend):
    req = GenerationRequest(PROMPTS[2], SamplingParams(temperature=0.0, max_tokens=12))

    async def go():
        chunks = [c async for c in backend.astream(req)]
        assert chunks[-1].finish_reason is not None
        assert tuple(t for c in chunks for t in c.token_ids) == backend.generate([req])[0].token_ids
        task = asyncio.create_task(backend.agenerate(GenerationRequest(PROMPTS[2], SamplingParams(max_tokens=900))))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):
            if backend.stats()["batch_size"] == 0:
                break
            await asyncio.sleep(0.05)
        assert backend.stats()["batch_size"] == 0

    asyncio.run(go())


def test_update_weights_changes_output_and_logprobs_follow(backend, tiny_qwen2, gpu_helpers):
    import torch

    req = GenerationRequest(PROMPTS[3], SamplingParams(temperature=0.0, max_tokens=16))
    [before] = backend.generate([req])
    sd = gpu_helpers.perturbed_state_dict(tiny_qwen2)
    backend.update_weights(sd)
    [after] = backend.generate([req])
    assert after.token_ids != before.token_ids
    ref = gpu_helpers.hf_logprobs(tiny_qwen2, req.prompt_ids, after.token_ids, state_dict=sd,
                                  dtype=getattr(torch, DTYPE))
    assert _close(after.logprobs, ref)
