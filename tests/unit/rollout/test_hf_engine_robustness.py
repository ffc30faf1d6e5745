"""The hf engine on bad input and faults: sampling values checked at submit, per-request
failures, a failed step that does not stop the engine, and the `active` gauge."""

import asyncio
import math

import pytest
import torch

from toolrl.rollout.base import BackendSettings, GenerationRequest, InvalidRequestError, SamplingParams
from toolrl.rollout.hf_backend import HFBackend
from toolrl.rollout.hf_engine import HFEngine
from toolrl.rollout.sampling import RowSampler, check_sampling, make_generator, sample_rows
from toolrl.rollout.testing import teacher_forced_logprobs

PROMPTS = [tuple(range(100, 100 + n)) for n in (3, 9, 5, 1, 14, 7)]


def greedy(n=12, **kw):
    return SamplingParams(temperature=0.0, max_tokens=n, **kw)


# ---------------------------------------------------------------- sampling values


@pytest.mark.parametrize(("field", "value", "message"), [
    ("temperature", -0.5, "temperature must be >= 0"),
    ("temperature", float("nan"), "temperature must be finite"),
    ("temperature", float("inf"), "temperature must be finite"),
    ("temperature", "hot", "temperature must be a number"),
    ("top_p", 0.0, "top_p must be in (0, 1]"),
    ("top_p", -0.1, "top_p must be in (0, 1]"),
    ("top_p", 1.5, "top_p must be in (0, 1]"),
    ("top_p", float("nan"), "top_p must be finite"),
    ("top_k", -1, "top_k must be >= 0"),
    ("max_tokens", 0, "max_tokens must be >= 1"),
    ("max_tokens", -3, "max_tokens must be >= 1"),
    ("max_tokens", 2.5, "max_tokens must be an integer"),
    ("seed", 1.5, "seed must be an integer"),
    ("stop", ("",), "stop entries must be non-empty strings"),
    ("min_tokens", -1, "min_tokens must be in [0, max_tokens=4]"),
    ("min_tokens", 5, "min_tokens must be in [0, max_tokens=4]"),
    ("min_tokens", 2, "min_tokens=2 is not supported by the hf backend"),
    ("ignore_eos", "yes", "ignore_eos must be a bool"),
])
def test_impossible_sampling_values_are_refused_naming_the_field(tiny_backend, field, value, message):
    sp = SamplingParams(**{"temperature": 1.0, "max_tokens": 4, field: value})
    before = tiny_backend.stats()["requests_total"]
    good = GenerationRequest(PROMPTS[0], greedy(4))
    with pytest.raises(InvalidRequestError) as err:  # the whole batch is refused before any request runs
        tiny_backend.generate([good, GenerationRequest(PROMPTS[1], sp, request_id="r-bad")])
    assert isinstance(err.value, ValueError)
    assert err.value.field == field
    assert message in str(err.value) and "r-bad" in str(err.value) and "Fix:" in str(err.value)
    assert tiny_backend.stats()["requests_total"] == before


def test_ignore_eos_samples_past_the_end_of_sequence_token(tiny_backend):
    engine = tiny_backend.engine
    [free] = tiny_backend.generate([GenerationRequest(PROMPTS[2], greedy(30))])
    eos_before = engine.eos_token_ids
    engine.eos_token_ids = frozenset({free.token_ids[3]})  # the random model's 4th greedy token plays the EOS
    try:
        [stopped] = tiny_backend.generate([GenerationRequest(PROMPTS[2], greedy(30))])
        [forced] = tiny_backend.generate([GenerationRequest(PROMPTS[2], greedy(30, ignore_eos=True))])
    finally:
        engine.eos_token_ids = eos_before
    assert stopped.finish_reason == "stop" and stopped.token_ids == free.token_ids[: len(stopped.token_ids)]
    assert len(stopped.token_ids) <= 4
    assert forced.finish_reason == "length" and forced.token_ids == free.token_ids[:30]
    assert len(forced.token_ids) == 30


async def test_agenerate_and_astream_refuse_bad_values_too(tiny_backend):
    bad = GenerationRequest(PROMPTS[0], SamplingParams(temperature=-1.0, max_tokens=4))
    with pytest.raises(ValueError, match="temperature"):
        await tiny_backend.agenerate(bad)
    with pytest.raises(ValueError, match="temperature"):
        async for _ in tiny_backend.astream(bad):
            pass


def test_tiny_temperature_is_greedy_and_tiny_top_p_keeps_the_best_token(tiny_backend):
    assert check_sampling(SamplingParams(temperature=6e-136)).temperature == 0.0
    assert check_sampling(SamplingParams(temperature=0.7)) == SamplingParams(temperature=0.7)
    [ref] = tiny_backend.generate([GenerationRequest(PROMPTS[1], greedy(12))])
    for sp in (SamplingParams(temperature=6e-136, max_tokens=12, seed=1),
               SamplingParams(temperature=1e-6, max_tokens=12, seed=2),
               SamplingParams(temperature=1.0, top_p=1e-50, max_tokens=12, seed=3),  # 0 in float32
               SamplingParams(temperature=1.0, top_p=5e-324, max_tokens=12, seed=4)):
        [r] = tiny_backend.generate([GenerationRequest(PROMPTS[1], sp)])
        assert r.token_ids == ref.token_ids, sp
        assert all(math.isfinite(x) for x in r.logprobs)
    # top_p that rounds to 0: the argmax, with the logprob of the temperature-scaled distribution
    [r] = tiny_backend.generate([GenerationRequest(PROMPTS[1], SamplingParams(temperature=0.5, top_p=1e-50,
                                                                              max_tokens=6, seed=5))])
    tf = teacher_forced_logprobs(tiny_backend.model, PROMPTS[1], r.token_ids, 0.5)
    assert torch.allclose(torch.tensor(r.logprobs), torch.tensor(tf), atol=1e-4)


def test_sampler_rows_never_produce_nan():
    logits = torch.tensor([[3.0, 1.0, -2.0, 0.5]])
    for row in (RowSampler(6e-136, generator=make_generator(0)), RowSampler(1e-30, generator=make_generator(0)),
                RowSampler(1.0, top_p=1e-50, generator=make_generator(0)),
                RowSampler(2.0, top_p=1e-45, top_k=2, generator=make_generator(0))):
        tok, lp = sample_rows(logits, [row])
        assert tok.item() == 0 and math.isfinite(lp.item()), row


# ---------------------------------------------------------------- stats


async def test_stats_count_active_requests(tiny_model_dir):
    backend = HFBackend(BackendSettings(model_path=str(tiny_model_dir), device="cpu", max_batch_size=1))
    try:
        assert backend.stats()["active"] == 0
        long = GenerationRequest(PROMPTS[0], SamplingParams(temperature=1.0, max_tokens=400, seed=1))
        tasks = [asyncio.create_task(backend.agenerate(long)) for _ in range(3)]
        while backend.stats()["batch_size"] < 1:
            await asyncio.sleep(0.005)
        s = backend.stats()
        assert (s["active"], s["batch_size"], s["queue_depth"]) == (3, 1, 2)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _ in range(500):
            if backend.stats()["active"] == 0:
                break
            await asyncio.sleep(0.01)
        assert backend.stats()["active"] == 0
        backend.generate([GenerationRequest(PROMPTS[1], greedy(3))])
        assert backend.stats()["active"] == 0
    finally:
        backend.close()


# ---------------------------------------------------------------- faults


class FaultyModel(torch.nn.Module):
    """A real model behind a switch that raises on chosen forward calls (fault injection only)."""

    def __init__(self, inner, fail):
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.fail = fail  # fail(kwargs) -> bool
        self.raised = 0

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def forward(self, **kw):
        if self.fail(kw):
            self.raised += 1
            raise RuntimeError("injected fault")
        return self.inner(**kw)


def _cache_arg(kw):
    """The KV cache the engine passed (`cache`, or `past_key_values` on older transformers)."""
    return kw.get("cache", kw.get("past_key_values"))


def _engine(tiny_backend, fail, **kw):
    model = FaultyModel(tiny_backend.model, fail).eval()
    return model, HFEngine(model, eos_token_ids=tiny_backend.engine.eos_token_ids, seed=0, device="cpu", **kw)


def test_a_failed_decode_step_fails_its_batch_and_the_engine_serves_the_next_requests(tiny_backend):
    calls = {"decode": 0}

    def fail(kw):  # the 3rd decode step raises, once
        if _cache_arg(kw) is not None and kw["input_ids"].shape[1] == 1:
            calls["decode"] += 1
            return calls["decode"] == 3
        return False

    model, engine = _engine(tiny_backend, fail, max_batch_size=4)
    try:
        reqs = [GenerationRequest(p, greedy(20), request_id=f"r{i}") for i, p in enumerate(PROMPTS[:3])]
        seqs = [engine.submit(r) for r in reqs]
        for s in seqs:
            with pytest.raises(RuntimeError, match="injected fault"):
                s.future.result(timeout=30)
        assert model.raised == 1 and engine.stats()["failed_total"] == 3
        later = [GenerationRequest(p, greedy(15)) for p in PROMPTS]
        got = [s.future.result(timeout=30) for s in [engine.submit(r) for r in later]]
        assert [r.token_ids for r in got] == [r.token_ids for r in tiny_backend.generate(later)]
        assert engine.stats()["active"] == 0
    finally:
        engine.close()


def test_a_prefill_that_fails_for_one_request_fails_only_that_request(tiny_backend):
    poison = 4321

    def fail(kw):  # any prefill that contains the poison token raises (a request-specific fault)
        return _cache_arg(kw) is None and bool((kw["input_ids"] == poison).any())

    model, engine = _engine(tiny_backend, fail, max_batch_size=8)
    try:
        running = engine.submit(GenerationRequest(PROMPTS[4], greedy(40)))
        while not running.tokens:  # it is decoding when the bad wave arrives
            pass
        wave = [GenerationRequest(p, greedy(12)) for p in PROMPTS[:3]]
        bad = GenerationRequest((*PROMPTS[1], poison), greedy(12), request_id="poisoned")
        with engine.model_lock:  # the engine waits: all four arrive in one prefill wave
            seqs = [engine.submit(r) for r in (wave[0], bad, *wave[1:])]
        with pytest.raises(RuntimeError, match="injected fault"):
            seqs[1].future.result(timeout=30)
        good = [seqs[0].future.result(timeout=30), *(s.future.result(timeout=30) for s in seqs[2:])]
        assert [r.token_ids for r in good] == [r.token_ids for r in tiny_backend.generate(wave)]
        [ref] = tiny_backend.generate([GenerationRequest(PROMPTS[4], greedy(40))])
        assert running.future.result(timeout=30).token_ids == ref.token_ids
        assert engine.stats()["failed_total"] == 1
        assert model.raised == 2  # the wave's prefill, then the poisoned request alone
    finally:
        engine.close()


def test_a_row_with_non_finite_logits_fails_alone(tiny_backend):
    class NaNRow(torch.nn.Module):  # the model's logits turn NaN for one request's row
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def get_input_embeddings(self):
            return self.inner.get_input_embeddings()

        def forward(self, **kw):
            out = self.inner(**kw)
            ids = kw["input_ids"]
            bad = (ids == 777).any(dim=1) if ids.shape[1] > 1 else torch.zeros(ids.shape[0], dtype=torch.bool)
            out.logits[bad] = float("nan")
            return out

    engine = HFEngine(NaNRow(tiny_backend.model).eval(), eos_token_ids=tiny_backend.engine.eos_token_ids, device="cpu")
    try:
        reqs = [GenerationRequest(PROMPTS[2], greedy(8)), GenerationRequest((*PROMPTS[0], 777), greedy(8)),
                GenerationRequest(PROMPTS[3], greedy(8))]
        seqs = [engine.submit(r) for r in reqs]
        with pytest.raises(FloatingPointError, match="not finite"):
            seqs[1].future.result(timeout=30)
        ok = [seqs[0].future.result(timeout=30), seqs[2].future.result(timeout=30)]
        assert [r.token_ids for r in ok] == [r.token_ids for r in tiny_backend.generate([reqs[0], reqs[2]])]
    finally:
        engine.close()
