"""The hf backend's engine on a tiny random Llama: batching, streaming, cancellation, queue, weights."""

import asyncio
import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from toolrl.errors import ToolrlError
from toolrl.rollout.base import (
    BackendSettings,
    GenerationRequest,
    PromptTooLongError,
    QueueFullError,
    RolloutBackend,
    SamplingParams,
)
from toolrl.rollout.hf_backend import HFBackend
from toolrl.rollout.testing import teacher_forced_logprobs

PROMPTS = [tuple(range(100, 100 + n)) for n in (3, 9, 5, 1, 14, 7)]


def greedy(n=12, **kw):
    return SamplingParams(temperature=0.0, max_tokens=n, **kw)


def test_protocol(tiny_backend):
    assert isinstance(tiny_backend, RolloutBackend)
    assert tiny_backend.name == "hf"


def test_greedy_equals_transformers_generate_with_slot_refills(tiny_model_dir):
    """5 prompts of different lengths through 2 slots: rows finish, get replaced, the rest keep going."""
    backend = HFBackend(BackendSettings(model_path=str(tiny_model_dir), device="cpu", max_batch_size=2))
    try:
        results = backend.generate([GenerationRequest(p, greedy(10 + i)) for i, p in enumerate(PROMPTS)])
        for i, (p, r) in enumerate(zip(PROMPTS, results)):
            ref = backend.model.generate(torch.tensor([p]), max_new_tokens=10 + i, do_sample=False,
                                         eos_token_id=backend.engine.eos_token_ids and list(backend.engine.eos_token_ids),
                                         attention_mask=torch.ones(1, len(p), dtype=torch.long))
            assert list(r.token_ids) == ref[0, len(p):].tolist()
            assert r.finish_reason in ("stop", "length") and r.prompt_tokens == len(p)
    finally:
        backend.close()


def test_logprobs_match_a_teacher_forced_forward(tiny_backend):
    reqs = [GenerationRequest(p, SamplingParams(temperature=0.7, max_tokens=16, seed=i)) for i, p in enumerate(PROMPTS)]
    for req, res in zip(reqs, tiny_backend.generate(reqs)):
        ref = teacher_forced_logprobs(tiny_backend.model, req.prompt_ids, res.token_ids, 0.7)
        assert torch.allclose(torch.tensor(res.logprobs), torch.tensor(ref), atol=1e-4)


def test_batch_equals_single_calls_and_seeds_reproduce(tiny_backend):
    greedy_reqs = [GenerationRequest(p, greedy(12)) for p in PROMPTS]
    batch = tiny_backend.generate(greedy_reqs)
    singles = [tiny_backend.generate([r])[0] for r in greedy_reqs]
    assert [r.token_ids for r in batch] == [r.token_ids for r in singles]
    sampled = [GenerationRequest(p, SamplingParams(temperature=1.0, max_tokens=12, seed=40 + i))
               for i, p in enumerate(PROMPTS)]
    a = tiny_backend.generate(sampled)
    b = tiny_backend.generate(sampled[::-1])[::-1]  # other batch order, same seeds
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    other = tiny_backend.generate([GenerationRequest(PROMPTS[0], SamplingParams(temperature=1.0, max_tokens=12, seed=1))])
    assert other[0].token_ids != a[0].token_ids


async def test_concurrent_agenerate_calls_share_decode_steps(tiny_backend):
    before = tiny_backend.stats()
    reqs = [GenerationRequest(p, greedy(20)) for p in PROMPTS]
    results = await asyncio.gather(*[tiny_backend.agenerate(r) for r in reqs])
    after = tiny_backend.stats()
    generated = sum(len(r.token_ids) for r in results)
    steps = after["decode_steps_total"] - before["decode_steps_total"]
    assert steps < generated / 2  # several rows per step
    assert [r.token_ids for r in results] == [r.token_ids for r in tiny_backend.generate(reqs)]
    assert after["queue_depth"] == 0 and after["batch_size"] == 0


async def test_astream_yields_the_same_tokens_then_a_finish_reason(tiny_backend):
    req = GenerationRequest(PROMPTS[1], greedy(15))
    chunks = [c async for c in tiny_backend.astream(req)]
    assert chunks[-1].finish_reason in ("stop", "length")
    assert all(c.finish_reason is None for c in chunks[:-1])
    streamed = tuple(t for c in chunks for t in c.token_ids)
    assert streamed == tiny_backend.generate([req])[0].token_ids
    assert len(chunks) >= len(streamed)  # one token per chunk, as sampled


async def _wait_idle(backend, timeout=10.0):
    t0 = time.monotonic()
    while backend.stats()["batch_size"] > 0 and time.monotonic() - t0 < timeout:
        await asyncio.sleep(0.01)
    return backend.stats()["batch_size"]


async def test_cancelling_the_consumer_aborts_the_request(tiny_backend):
    long = GenerationRequest(PROMPTS[0], SamplingParams(temperature=1.0, max_tokens=400, seed=3))
    got = []

    async def consume():
        async for chunk in tiny_backend.astream(long):
            got.extend(chunk.token_ids)

    task = asyncio.create_task(consume())
    while len(got) < 3:
        await asyncio.sleep(0.005)
    task.cancel()  # a client disconnect
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _wait_idle(tiny_backend) == 0
    assert len(got) < 400
    # the same for agenerate
    task2 = asyncio.create_task(tiny_backend.agenerate(long))
    await asyncio.sleep(0.05)
    task2.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task2
    assert await _wait_idle(tiny_backend) == 0


async def test_full_queue_raises_a_clear_error(tiny_model_dir):
    backend = HFBackend(BackendSettings(model_path=str(tiny_model_dir), device="cpu", max_batch_size=1,
                                        extra={"max_queue": 1}))
    try:
        long = GenerationRequest(PROMPTS[0], SamplingParams(temperature=1.0, max_tokens=300, seed=1))
        running = asyncio.create_task(backend.agenerate(long))
        while backend.stats()["batch_size"] < 1:
            await asyncio.sleep(0.005)
        waiting = asyncio.create_task(backend.agenerate(long))
        await asyncio.sleep(0.01)
        assert backend.stats()["queue_depth"] == 1
        with pytest.raises(QueueFullError) as err:
            await backend.agenerate(long)
        assert "queue is full" in str(err.value) and "max_queue" in str(err.value)
        assert backend.stats()["rejected_total"] == 1
        running.cancel()
        waiting.cancel()
        await asyncio.gather(running, waiting, return_exceptions=True)
    finally:
        backend.close()


def test_limits_stop_strings_and_bad_prompts(tiny_backend):
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        tiny_backend.generate([GenerationRequest(PROMPTS[0], greedy(0))])
    # the context window (512) caps max_tokens
    [r] = tiny_backend.generate([GenerationRequest(tuple([100] * 505), greedy(50))])
    assert len(r.token_ids) == 7 and r.finish_reason == "length"
    with pytest.raises(PromptTooLongError) as err:
        tiny_backend.generate([GenerationRequest(tuple([100] * 512), greedy(5))])
    assert "context window is 512" in str(err.value)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        tiny_backend.generate([GenerationRequest((10**7,), greedy(5))])
    # a stop string cuts generation after the token that completes it
    [full] = tiny_backend.generate([GenerationRequest(PROMPTS[2], greedy(30))])
    text = tiny_backend.tokenizer.decode(full.token_ids)
    stop = text[len(tiny_backend.tokenizer.decode(full.token_ids[:5])):][:3]
    assert stop.strip()
    [cut] = tiny_backend.generate([GenerationRequest(PROMPTS[2], greedy(30, stop=(stop,)))])
    assert cut.finish_reason == "stop" and len(cut.token_ids) < len(full.token_ids)
    assert stop in tiny_backend.tokenizer.decode(cut.token_ids)
    assert cut.token_ids == full.token_ids[: len(cut.token_ids)]


def test_update_weights_changes_the_output_and_checks_names(tiny_model_dir):
    backend = HFBackend(BackendSettings(model_path=str(tiny_model_dir), device="cpu", max_batch_size=4))
    try:
        req = GenerationRequest(PROMPTS[1], greedy(12))
        [before] = backend.generate([req])
        other = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        with torch.no_grad():
            for p in other.parameters():
                p.add_(torch.randn_like(p) * 0.5)
        backend.update_weights(other.state_dict())
        [after] = backend.generate([req])
        assert after.token_ids != before.token_ids
        assert after.token_ids == tuple(other.generate(torch.tensor([req.prompt_ids]), max_new_tokens=12, do_sample=False,
                                                       attention_mask=torch.ones(1, len(req.prompt_ids), dtype=torch.long),
                                                       eos_token_id=list(backend.engine.eos_token_ids))[0, len(req.prompt_ids):].tolist())
        with pytest.raises(ToolrlError) as err:
            backend.update_weights({"model.not_a_layer.weight": torch.zeros(1)})
        assert "not in the rollout model" in str(err.value)
    finally:
        backend.close()


def test_colocated_module_is_shared_not_copied(tiny_model_dir):
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    policy.train()  # a trainer's module is in train mode; generation must still use the cache
    backend = HFBackend(BackendSettings(model_path=str(tiny_model_dir), module=policy, max_batch_size=2))
    try:
        assert backend.model is policy
        req = GenerationRequest(PROMPTS[3], greedy(8))
        [before] = backend.generate([req])
        torch.manual_seed(0)
        with torch.no_grad():  # the trainer changes its weights in place
            for p in policy.parameters():
                p.add_(torch.randn_like(p))
        [after] = backend.generate([req])
        assert after.token_ids != before.token_ids
        ref = teacher_forced_logprobs(policy, req.prompt_ids, after.token_ids)
        assert torch.allclose(torch.tensor(after.logprobs), torch.tensor(ref), atol=1e-4)
        assert policy.training  # the caller's mode is restored
        backend.update_weights(policy.state_dict())  # its own tensors: nothing to copy, no error
    finally:
        backend.close()


def test_sleep_frees_the_kv_cache(tiny_backend):
    tiny_backend.generate([GenerationRequest(PROMPTS[0], greedy(4))])
    assert tiny_backend.stats()["kv_cache_bytes"] > 0
    tiny_backend.sleep()
    assert tiny_backend.stats()["kv_cache_bytes"] == 0
    tiny_backend.wake()
    assert len(tiny_backend.generate([GenerationRequest(PROMPTS[0], greedy(4))])[0].token_ids) == 4


def test_random_mix_of_lengths_through_few_slots_matches_generate(tiny_model_dir):
    """Rows of very different prompt and output lengths join, finish, move and slide in the slot cache."""
    import random

    rng = random.Random(0)
    backend = HFBackend(BackendSettings(model_path=str(tiny_model_dir), device="cpu", max_batch_size=3))
    try:
        prompts = [tuple(rng.randrange(50, 5000) for _ in range(rng.randint(1, 60))) for _ in range(10)]
        caps = [rng.randint(1, 70) for _ in prompts]
        results = backend.generate([GenerationRequest(p, greedy(c)) for p, c in zip(prompts, caps)])
        eos = list(backend.engine.eos_token_ids)
        for p, c, r in zip(prompts, caps, results):
            ref = backend.model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                         max_new_tokens=c, do_sample=False, eos_token_id=eos)
            assert list(r.token_ids) == ref[0, len(p):].tolist()
    finally:
        backend.close()


def test_opt_in_decode_attention_gives_the_same_tokens_and_logprobs(tiny_model_dir, tiny_backend):
    backend = HFBackend(BackendSettings(model_path=str(tiny_model_dir), device="cpu", max_batch_size=3,
                                        extra={"decode_attention": True}))
    try:
        assert backend.engine.decode_attention and backend.model.config._attn_implementation == "toolrl_sdpa"
        reqs = [GenerationRequest(p, SamplingParams(temperature=0.7, max_tokens=12, seed=i)) for i, p in enumerate(PROMPTS)]
        got, ref = backend.generate(reqs), tiny_backend.generate(reqs)
        assert [r.token_ids for r in got] == [r.token_ids for r in ref]
        for a, b in zip(got, ref):
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
    finally:
        backend.close()
