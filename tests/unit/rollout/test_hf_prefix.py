"""Prefix reuse in the hf engine: a follow-up turn continues the keys/values of the previous
one and gets the same tokens and logprobs as a full prefill; stale prefixes are never used."""

import random

import pytest
import torch

from toolrl.rollout.base import BackendSettings, GenerationRequest, SamplingParams
from toolrl.rollout.hf_backend import HFBackend
from toolrl.rollout.hf_cache import SlotKVCache
from toolrl.rollout.hf_prefix import PrefixStore
from toolrl.rollout.testing import teacher_forced_logprobs

rng = random.Random(7)
SYSTEM = tuple(rng.randrange(50, 5000) for _ in range(60))  # a shared system prompt + tools
PROMPTS = [SYSTEM + tuple(rng.randrange(50, 5000) for _ in range(n)) for n in (5, 23, 11, 40)]


def backend_for(tiny_model_dir, **extra):
    return HFBackend(BackendSettings(model_path=str(tiny_model_dir), device="cpu", max_batch_size=3, extra=extra))


@pytest.fixture(scope="module")
def plain(tiny_model_dir):
    b = backend_for(tiny_model_dir, prefix_cache_mb=0)
    yield b
    b.close()


def sampling(i, n=16):
    return SamplingParams(temperature=0.8, max_tokens=n, seed=100 + i)


def next_turn(prompt, result, i):
    """The agent loop's next prompt: previous prompt + sampled ids + a tool message's ids."""
    return (*prompt, *result.token_ids, *[60 + (7 * i + j) % 900 for j in range(4 + 9 * i)])


def test_follow_up_turns_reuse_the_previous_turn_and_match_a_full_prefill(tiny_model_dir, plain):
    backend = backend_for(tiny_model_dir)
    try:
        prompts = list(PROMPTS)
        for turn in range(3):
            reqs = [GenerationRequest(p, sampling(10 * turn + i)) for i, p in enumerate(prompts)]
            before = backend.stats()
            got = backend.generate(reqs)
            after = backend.stats()
            ref = plain.generate(reqs)
            assert [r.token_ids for r in got] == [r.token_ids for r in ref]
            for req, r in zip(reqs, got):
                tf = teacher_forced_logprobs(plain.model, req.prompt_ids, r.token_ids, 0.8)
                assert torch.allclose(torch.tensor(r.logprobs), torch.tensor(tf), atol=1e-4)
            hits = after["prefix_hits_total"] - before["prefix_hits_total"]
            reused = after["prefix_reused_tokens_total"] - before["prefix_reused_tokens_total"]
            run = after["prefill_tokens_total"] - before["prefill_tokens_total"]
            if turn == 0:
                assert hits == 0  # a shared system prompt alone is not reused (results never depend on it)
            else:
                assert hits == len(reqs)
                assert reused > 3 * run  # most of each prompt came from the cache
            prompts = [next_turn(p, r, i) for i, (p, r) in enumerate(zip(prompts, got))]
        assert backend.stats()["prefix_cache_entries"] >= 1 and backend.stats()["prefix_cache_bytes"] > 0
    finally:
        backend.close()


def test_a_wave_mixing_continued_and_fresh_prompts_of_all_tail_lengths(tiny_model_dir, plain):
    backend = backend_for(tiny_model_dir)
    try:
        first = backend.generate([GenerationRequest(p, SamplingParams(temperature=0.0, max_tokens=12)) for p in PROMPTS])
        r2 = random.Random(3)
        wave = []
        for i, (p, r) in enumerate(zip(PROMPTS, first)):
            for tail in (1, 6, 70):  # tails of very different lengths
                wave.append((*p, *r.token_ids, *[r2.randrange(50, 5000) for _ in range(tail)]))
        wave += [tuple(r2.randrange(50, 5000) for _ in range(n)) for n in (3, 45)]  # fresh prompts
        wave += [PROMPTS[1], PROMPTS[1]]  # identical prompts that are also cached
        reqs = [GenerationRequest(p, SamplingParams(temperature=0.0, max_tokens=10)) for p in wave]
        got, ref = backend.generate(reqs), plain.generate(reqs)
        assert [r.token_ids for r in got] == [r.token_ids for r in ref]
        for a, b in zip(got, ref):
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)
        assert backend.stats()["prefix_hits_total"] >= 12
    finally:
        backend.close()


def _turns(backend, prompt):
    [a] = backend.generate([GenerationRequest(prompt, SamplingParams(temperature=0.0, max_tokens=8))])
    follow = GenerationRequest(next_turn(prompt, a, 1), SamplingParams(temperature=0.0, max_tokens=8))
    hits = backend.stats()["prefix_hits_total"]
    return follow, hits


def test_new_weights_drop_the_cached_prefixes(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    backend = backend_for(tiny_model_dir)
    try:
        follow, hits = _turns(backend, PROMPTS[2])
        other = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        with torch.no_grad():
            for p in other.parameters():
                p.add_(torch.randn_like(p) * 0.3)
        backend.update_weights(other.state_dict())
        [r] = backend.generate([follow])
        assert backend.stats()["prefix_hits_total"] == hits  # not continued from the old keys/values
        tf = teacher_forced_logprobs(other, follow.prompt_ids, r.token_ids)
        assert torch.allclose(torch.tensor(r.logprobs), torch.tensor(tf), atol=1e-4)
        # and sleep() frees them
        assert backend.stats()["prefix_cache_bytes"] > 0
        backend.sleep()
        assert backend.stats()["prefix_cache_bytes"] == 0
    finally:
        backend.close()


@pytest.mark.parametrize("how", ["under the model lock (fused optimizers)", "in place (version counters)"])
def test_a_colocated_module_changed_by_its_trainer_drops_the_cached_prefixes(tiny_model_dir, how):
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    backend = HFBackend(BackendSettings(model_path=str(tiny_model_dir), module=policy, max_batch_size=2))
    try:
        follow, hits = _turns(backend, PROMPTS[3])
        [same] = backend.generate([follow])
        assert backend.stats()["prefix_hits_total"] == hits + 1  # unchanged weights: reused
        follow, hits = _turns(backend, PROMPTS[0])
        torch.manual_seed(0)
        with torch.no_grad():
            noise = [torch.randn_like(p) * 0.3 for p in policy.parameters()]
            if how.startswith("under"):
                with backend.engine.model_lock:  # what the trainer does; .data hides the change from autograd
                    for p, n in zip(policy.parameters(), noise):
                        p.data.add_(n)
            else:
                for p, n in zip(policy.parameters(), noise):
                    p.add_(n)
        [r] = backend.generate([follow])
        assert backend.stats()["prefix_hits_total"] == hits
        tf = teacher_forced_logprobs(policy, follow.prompt_ids, r.token_ids)
        assert torch.allclose(torch.tensor(r.logprobs), torch.tensor(tf), atol=1e-4)
    finally:
        backend.close()


def test_prefix_store_longest_match_lru_and_covered_entries():
    def kv(n, fill=1.0):
        return [torch.full((1, n, 2), fill)], [torch.full((1, n, 2), fill)]

    per_token = 2 * 2 * 4  # keys + values, 2 floats each
    store = PrefixStore(max_bytes=100 * per_token, min_tokens=4)
    a = tuple(range(10, 50))  # 40 tokens
    store.put(a, *kv(40))
    assert store.match(a[:3]) is None  # shorter than min_tokens
    assert store.match((*a[:20], 999, 998)) is None  # a common head only: never used
    hit = store.match((*a, 999, 998))
    assert hit.length == 40 and hit.entry.prefix(20)[0][0].shape == (1, 20, 2)
    assert store.match(a).length == 39  # the last prompt token always runs
    longer = (*a, 1, 2, 3)
    store.put(longer, *kv(43, 2.0))
    assert len(store) == 1  # `a` is covered by `longer`
    b = tuple(range(500, 550))
    store.put(b, *kv(50, 3.0))
    assert store.match((*longer, 7)).length == 43 and store.match((*a, 1, 7)) is None and len(store) == 2
    store.match((*b, 5))  # b most recently used
    store.put(tuple(range(900, 930)), *kv(30))  # 43 + 50 + 30 > 100 tokens: the least recent goes
    assert store.match((*longer, 7)) is None and store.match((*b, 5)).length == 50
    assert store.nbytes == 80 * per_token
    store.put(tuple(range(2000, 2200)), *kv(200))  # larger than the whole budget: not kept
    assert len(store) == 2
    store.clear()
    assert store.nbytes == 0 and store.match((*b, 5)) is None


def test_slot_cache_extends_loaded_rows_with_a_causal_mask():
    cache = SlotKVCache(num_layers=1, max_rows=2, device="cpu", dtype=torch.float32)
    cache.load_rows([([torch.full((1, 3, 1), 1.0)], [torch.full((1, 3, 1), 1.0)]),
                     ([torch.full((1, 1, 1), 2.0)], [torch.full((1, 1, 1), 2.0)])], room=2)
    assert (cache.start, cache.end, cache.lengths) == (0, 3, [3, 1])
    mask, pos = cache.prepare_extend(2)
    assert mask.shape == (2, 1, 2, 5) and pos.tolist() == [[3, 4], [1, 2]]
    assert mask[0, 0].tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    assert mask[1, 0].tolist() == [[False, False, True, True, False], [False, False, True, True, True]]
    keys, _ = cache.update(torch.full((2, 1, 2, 1), 9.0), torch.full((2, 1, 2, 1), 9.0), 0)
    assert keys[:, 0, :, 0].tolist() == [[1, 1, 1, 9, 9], [0, 0, 2, 9, 9]]
    cache.advance(2)
    k, _ = cache.rows()
    assert cache.lengths == [5, 3] and k[0].shape == (2, 1, 5, 1)
    assert cache.copy_row(1)[0][0][0, :, 0].tolist() == [2, 9, 9]


def test_running_the_same_episodes_again_gives_bit_identical_results(tiny_model_dir):
    """Cached rows are only continued, never matched by a shared head, so a rerun is exact."""
    backend = backend_for(tiny_model_dir)

    def episodes():
        prompts, out = list(PROMPTS), []
        for turn in range(3):
            got = backend.generate([GenerationRequest(p, sampling(10 * turn + i)) for i, p in enumerate(prompts)])
            out.append([(r.token_ids, r.logprobs) for r in got])
            prompts = [next_turn(p, r, i) for i, (p, r) in enumerate(zip(prompts, got))]
        return out

    try:
        first = episodes()
        hits = backend.stats()["prefix_hits_total"]
        assert episodes() == first
        assert backend.stats()["prefix_hits_total"] == 2 * hits > 0
    finally:
        backend.close()
