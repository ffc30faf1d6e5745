"""No `past_key_values` deprecation from a training forward or the hf engine (issue 15).

transformers 5.x renamed the KV-cache keyword and output field to `cache`; passing
`past_key_values=` raises a FutureWarning (removal announced for 5.40) and reading
`out.past_key_values` logs a deprecation through transformers' logger. Both are caught
here, with the real SmolLM2-135M-Instruct (LoRA policy, critic backbone, hf engine).
A forward hook also checks that the shared-prompt path really handed a cache to the
model, so the test cannot pass by the trainer silently falling back to separate passes.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from toolrl.config import load_config
from toolrl.rollout.base import BackendSettings, GenerationRequest, SamplingParams
from toolrl.rollout.hf_backend import HFBackend
from toolrl.trainer.batch import build_batch
from toolrl.trainer.forward import critic_values, response_logprobs, uses_gradient_checkpointing
from toolrl.trainer.modeling import enable_checkpointing, load_critic, load_policy, load_tokenizer

DEPRECATED = ("past_key_values", "cache_params")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def cache_deprecations() -> Iterator[list[str]]:
    """Collects every warning and transformers log message that names a deprecated cache keyword."""
    found: list[str] = []
    hf_logger = logging.getLogger("transformers")
    handler, level = _Records(), hf_logger.level
    hf_logger.addHandler(handler)
    hf_logger.setLevel(logging.WARNING)  # the trainer sets transformers to errors only; this test wants to see all
    once = getattr(logging.Logger.warning_once, "cache_clear", None)  # transformers' warning_once is an lru_cache
    if once is not None:
        once()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
    finally:
        hf_logger.removeHandler(handler)
        hf_logger.setLevel(level)
    found.extend(str(w.message) for w in caught if any(name in str(w.message) for name in DEPRECATED))
    found.extend(m for m in handler.messages if any(name in m for name in DEPRECATED))


@contextlib.contextmanager
def cache_calls(model: Any) -> Iterator[list[str]]:
    """Records, for every call of the underlying transformers model, which cache keyword it got (if any)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    seen: list[str] = []

    def hook(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        seen.extend(k for k in ("cache", *DEPRECATED) if kwargs.get(k) is not None)

    handle = base.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def _chat_prompt(tok: Any, question: str) -> list[int]:
    text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
    return tok.encode(text, add_special_tokens=False)


@pytest.fixture(scope="module")
def grpo_batch(smollm2_path):
    """Two GRPO groups of 3 samples each sharing a real chat prompt, with tool-output tokens masked."""
    from toolrl.types import Trajectory

    tok = load_tokenizer(smollm2_path)
    trajs, groups = [], []
    for g, question in enumerate(["What is 17 * 23?", "Add 4 and 9, then double it."]):
        prompt = _chat_prompt(tok, question)
        for s, answer in enumerate(["<answer>391</answer>", "Let me compute it with the tool.", "26"]):
            resp = tok.encode(answer, add_special_tokens=False)
            mask = [0 if i == 1 else 1 for i in range(len(resp))]
            trajs.append(Trajectory(
                task_id=f"t{g}", sample_index=s, prompt_ids=tuple(prompt), response_ids=tuple(resp),
                loss_mask=tuple(mask), logprobs=(0.0,) * len(resp),
                messages=({"role": "user", "content": question}, {"role": "assistant", "content": answer}),
                num_prompt_messages=1))
            groups.append(str(g))
    return build_batch(trajs, groups, [True] * len(trajs), tok.pad_token_id)


@pytest.fixture(scope="module")
def lora_policy(smollm2_path):
    return load_policy(load_config(None, ["model.lora.rank=8"]), smollm2_path, torch.device("cpu"))


@pytest.mark.parametrize("logits_chunk", [4096, None])
def test_training_forward_and_backward_use_the_cache_keyword(lora_policy, grpo_batch, logits_chunk):
    policy = lora_policy
    policy.train()
    policy.zero_grad(set_to_none=True)
    with cache_deprecations() as found, cache_calls(policy) as seen:
        lp, ent = response_logprobs(policy, grpo_batch, 1.0, with_entropy=True, share_prompt=True,
                                    logits_chunk=logits_chunk)
        (-(lp * grpo_batch.response_mask).sum()).backward()
    assert found == [], found
    assert seen == ["cache"], f"the shared-prompt pass should hand the prompt's cache over once as `cache`: {seen}"
    grads = [p.grad for p in policy.parameters() if p.requires_grad and p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)  # a real training step's gradient reached LoRA
    assert torch.isfinite(lp).all() and (lp * grpo_batch.response_mask).sum() < 0


def test_critic_values_use_the_cache_keyword(smollm2_path, grpo_batch):
    cfg = load_config(None, ["model.lora.rank=0"])  # a LoRA critic does not load yet (peft task type; docs/scaling.md)
    critic = load_critic(cfg, smollm2_path, torch.device("cpu"))
    with cache_deprecations() as found, cache_calls(critic.backbone) as seen:
        shared = critic_values(critic, grpo_batch, share_prompt=True)
    assert found == [], found
    assert seen == ["cache"], seen
    separate = critic_values(critic, grpo_batch, share_prompt=False)
    mask = grpo_batch.response_mask
    assert torch.allclose(shared * mask, separate * mask, atol=1e-4)


def test_hf_engine_generation_and_prefix_reuse_warn_about_nothing(smollm2_path):
    backend = HFBackend(BackendSettings(model_path=str(smollm2_path), device="cpu", max_batch_size=8))
    try:
        tok = backend.tokenizer
        prompt = tuple(_chat_prompt(tok, "Count from one to ten in words, please."))
        sp = SamplingParams(temperature=0.0, max_tokens=6)
        with cache_deprecations() as found, cache_calls(backend.model) as seen:
            first = backend.generate([GenerationRequest(prompt, sp), GenerationRequest(prompt[:12], sp)])
            follow = prompt + tuple(first[0].token_ids) + tuple(tok.encode(" and", add_special_tokens=False))
            backend.generate([GenerationRequest(follow, sp)])  # continues a cached row: prefill_continue
        assert found == [], found
        assert seen and set(seen) == {"cache"}, seen
        assert all(len(r.token_ids) == 6 for r in first)
    finally:
        backend.close()


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_is_read_through_the_current_name(tiny_llama, make_config, lora):
    """`gradient_checkpointing_enable` / `is_gradient_checkpointing` are deprecated (removal in transformers v6);
    the trainer uses the new names."""
    model = tiny_llama()
    assert not uses_gradient_checkpointing(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if lora:  # peft reads the old name while wrapping; apply_lora keeps that out of the user's output
            from toolrl.trainer.modeling import apply_lora

            model = apply_lora(model, make_config(**{"model.lora.rank": 4}).model.lora)
        enable_checkpointing(model)
        on = uses_gradient_checkpointing(model)
    assert on
    base = model.get_base_model() if lora else model
    assert base.model.layers[0].gradient_checkpointing  # the decoder layers really recompute
    assert [str(w.message) for w in caught if "checkpointing" in str(w.message)] == []


def test_evaluating_a_lora_checkpoint_prints_no_deprecation(tiny_llama, make_config, tmp_path):
    """`toolrl eval` of a LoRA checkpoint (make demo's stage 5) printed peft's `is_gradient_checkpointing` warning."""
    from transformers import LlamaForCausalLM

    from toolrl.trainer.modeling import apply_lora, load_eval_model

    tiny_llama().save_pretrained(tmp_path / "base")
    policy = apply_lora(LlamaForCausalLM.from_pretrained(tmp_path / "base"), make_config(**{"model.lora.rank": 4}).model.lora)
    policy.save_pretrained(tmp_path / "adapter")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        merged = load_eval_model(tmp_path / "adapter", "float32", "cpu")
    assert merged is not None and not hasattr(merged, "peft_config")  # really merged into a plain model
    assert [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))] == []
