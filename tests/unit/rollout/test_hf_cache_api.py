"""The hf engine hands its KV cache to the model through the supported API: no deprecation warning."""

import inspect
import warnings

import transformers

from toolrl.rollout.base import GenerationRequest, SamplingParams
from toolrl.rollout.hf_prefill import cache_kwarg


def test_engine_uses_the_cache_keyword_the_model_declares(tiny_backend):
    declared = inspect.signature(type(tiny_backend.model).forward).parameters
    expected = "cache" if "cache" in declared else "past_key_values"
    assert cache_kwarg(tiny_backend.model) == expected
    if int(transformers.__version__.split(".")[0]) >= 5 and "cache" in declared:
        assert expected == "cache"  # the name transformers keeps after past_key_values is removed


def test_generation_with_prefix_reuse_warns_about_nothing(tiny_backend):
    prompt = tuple(range(5, 40))
    sp = SamplingParams(temperature=0.0, max_tokens=6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = tiny_backend.generate([GenerationRequest(prompt, sp), GenerationRequest(prompt[:20], sp)])
        # a follow-up that extends a finished row's prompt: the prefix-reuse path (prefill_continue)
        follow = prompt + tuple(first[0].token_ids) + (11, 12, 13)
        tiny_backend.generate([GenerationRequest(follow, sp)])
    cache_warnings = [w for w in caught if "past_key_values" in str(w.message) or "cache" in str(w.message).lower()]
    assert cache_warnings == [], [str(w.message) for w in cache_warnings]
    assert all(len(r.token_ids) == 6 for r in first)
