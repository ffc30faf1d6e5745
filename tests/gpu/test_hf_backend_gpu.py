"""The hf backend on a CUDA GPU (tiny random Qwen2): continuous batching and logprobs on the device."""

import asyncio

import pytest
import torch

from toolrl.rollout.base import BackendSettings, GenerationRequest, SamplingParams

PROMPTS = [tuple(range(10, 10 + n)) for n in (5, 17, 3, 40, 9, 1, 30, 12)]


@pytest.fixture(scope="module")
def backend(tiny_qwen2):
    from toolrl.rollout.hf_backend import HFBackend

    b = HFBackend(BackendSettings(model_path=str(tiny_qwen2), device="cuda", dtype="float32", max_batch_size=3))
    yield b
    b.close()


def test_logprobs_match_teacher_forcing_on_gpu(backend, tiny_qwen2, gpu_helpers):
    assert backend.device.type == "cuda"
    reqs = [GenerationRequest(p, SamplingParams(temperature=0.8, max_tokens=20, seed=i)) for i, p in enumerate(PROMPTS)]
    for req, res in zip(reqs, backend.generate(reqs)):  # 8 requests through 3 slots
        ref = gpu_helpers.hf_logprobs(tiny_qwen2, req.prompt_ids, res.token_ids, temperature=0.8)
        assert max(abs(a - b) for a, b in zip(res.logprobs, ref)) < 1e-3


def test_greedy_batch_equals_single_and_hf_generate(backend):
    greedy = [GenerationRequest(p, SamplingParams(temperature=0.0, max_tokens=16)) for p in PROMPTS]
    batch = backend.generate(greedy)
    assert [r.token_ids for r in batch] == [backend.generate([g])[0].token_ids for g in greedy]
    for g, r in zip(greedy, batch):
        ref = backend.model.generate(torch.tensor([g.prompt_ids], device="cuda"), max_new_tokens=16, do_sample=False,
                                     attention_mask=torch.ones(1, len(g.prompt_ids), dtype=torch.long, device="cuda"),
                                     eos_token_id=list(backend.engine.eos_token_ids))
        assert list(r.token_ids) == ref[0, len(g.prompt_ids):].tolist()


def test_update_weights_and_stream_on_gpu(backend, tiny_qwen2, gpu_helpers):
    req = GenerationRequest(PROMPTS[3], SamplingParams(temperature=0.0, max_tokens=16))
    [before] = backend.generate([req])
    sd = gpu_helpers.perturbed_state_dict(tiny_qwen2)
    backend.update_weights(sd)
    [after] = backend.generate([req])
    assert after.token_ids != before.token_ids

    async def go():
        return tuple([t async for c in backend.astream(req) for t in c.token_ids])

    assert asyncio.run(go()) == after.token_ids
