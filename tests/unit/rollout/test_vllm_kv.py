"""`rollout.backend_args.kv_cache=fit`: the vllm backend's KV cache sized to the batch (toolrl.rollout.vllm_kv)."""

from __future__ import annotations

import json

import pytest

from toolrl.errors import ToolrlError
from toolrl.rollout import vllm_backend as vlb
from toolrl.rollout import vllm_kv
from toolrl.rollout.base import BackendSettings


@pytest.fixture
def qwen_folder(tmp_path):
    """Qwen2.5-0.5B's shape (24 layers, 14 heads, 2 KV heads, hidden 896) as transformers writes its config."""
    from transformers import Qwen2Config

    Qwen2Config(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                intermediate_size=4864, vocab_size=151936).save_pretrained(tmp_path)
    return tmp_path


def test_fit_reserves_the_batchs_tokens_from_the_models_config(qwen_folder):
    cfg = json.loads((qwen_folder / "config.json").read_text())
    assert vllm_kv.kv_bytes_per_token(cfg, "bfloat16") == 2 * 24 * 2 * 64 * 2 == 12288
    assert vllm_kv.kv_bytes_per_token(cfg, "float32") == 24576
    # the GPU benchmarks' engine: 256 sequences of 1024 tokens, 3.0 GiB plus the margin, against 42 GiB of an
    # H200 at gpu_memory_utilization 0.3
    got = vllm_kv.fit_kv_cache_bytes(str(qwen_folder), "bfloat16", 256, 1024)
    assert got == pytest.approx(256 * 1024 * 12288 * 1.1, abs=1) and 3.2 < got / 2**30 < 3.4


def test_llm_kwargs_pass_fit_to_vllm_as_kv_cache_memory_bytes_and_share_changes_nothing(qwen_folder):
    def kw(**extra):
        return vlb.llm_kwargs(BackendSettings(str(qwen_folder), dtype="bfloat16", max_batch_size=8, extra=extra))

    fit = kw(kv_cache="fit", max_model_len=512, gpu_memory_utilization=0.3)
    assert "kv_cache" not in fit and fit["kv_cache_memory_bytes"] == int(-(-8 * 512 * 12288 * 1.1 // 1))
    assert fit["gpu_memory_utilization"] == 0.3  # still passed: vLLM ignores it for the KV cache, not elsewhere
    # unset, fit passes a small share: vLLM's default (0.92) would fail its start-up check ("free memory ...
    # less than desired GPU memory utilization") whenever the colocated trainer holds over 8% of the card
    assert kw(kv_cache="fit", max_model_len=512)["gpu_memory_utilization"] == vllm_kv.FIT_START_SHARE == 0.05
    assert "gpu_memory_utilization" not in kw(kv_cache="share", max_model_len=512)
    assert "kv_cache_memory_bytes" not in kw(max_model_len=512) == kw(kv_cache="share", max_model_len=512)
    # the engine's own settings decide: backend_args' max_num_seqs over max_batch_size, an fp8 cache halves it
    assert kw(kv_cache="fit", max_model_len=512, max_num_seqs=4)["kv_cache_memory_bytes"] == \
        int(-(-4 * 512 * 12288 * 1.1 // 1))
    assert kw(kv_cache="fit", max_model_len=512, kv_cache_dtype="fp8")["kv_cache_memory_bytes"] == \
        int(-(-8 * 512 * 6144 * 1.1 // 1))


@pytest.mark.parametrize("extra, where, words", [
    ({"kv_cache": "fits", "max_model_len": 512}, "rollout.backend_args.kv_cache", "share"),
    ({"kv_cache": "fit"}, "rollout.backend_args.kv_cache", "max_model_len"),
    ({"kv_cache": "fit", "max_model_len": 512, "kv_cache_memory_bytes": 1 << 30}, "rollout.backend_args.kv_cache",
     "drop one"),
])
def test_bad_kv_cache_settings_stop_before_vllm_loads(qwen_folder, extra, where, words):
    with pytest.raises(ToolrlError) as err:
        vlb.llm_kwargs(BackendSettings(str(qwen_folder), dtype="bfloat16", max_batch_size=8, extra=extra))
    assert err.value.where == where and words in str(err.value)


def test_fit_refuses_what_it_cannot_size_with_a_fix(tmp_path, qwen_folder):
    with pytest.raises(ToolrlError) as err:  # no config.json (e.g. a GGUF file's path)
        vllm_kv.fit_kv_cache_bytes(str(tmp_path / "nowhere"), "bfloat16", 8, 512)
    assert "config.json" in err.value.what and "kv_cache_memory_bytes" in err.value.fix
    with pytest.raises(ToolrlError) as err:  # latent attention: another cache layout
        vllm_kv.kv_bytes_per_token({"kv_lora_rank": 512, "num_hidden_layers": 2}, "bfloat16")
    assert "MLA" in err.value.what
    with pytest.raises(ToolrlError) as err:
        vllm_kv.kv_bytes_per_token({"num_hidden_layers": 2}, "bfloat16")
    assert "num_attention_heads" in err.value.what
    with pytest.raises(ToolrlError) as err:
        vllm_kv.fit_kv_cache_bytes(str(qwen_folder), "int4", 8, 512)
    assert "int4" in err.value.what
    cfg = json.loads((qwen_folder / "config.json").read_text())
    assert vllm_kv.kv_bytes_per_token({**cfg, "torch_dtype": "float32"}, "auto") == 24576  # "auto": the model's
    assert vllm_kv.kv_bytes_per_token({"text_config": cfg}, "bfloat16") == 12288  # a multimodal wrapper


def test_an_async_vllm_run_gets_fit_by_default_when_max_model_len_is_set_and_a_warning_when_not():
    added, hint = vllm_kv.awake_engine_args("vllm", {}, max_staleness=1)
    assert added == {} and hint and "max_model_len" in hint and "kv_cache=fit" in hint and "0.9" in hint
    assert vllm_kv.awake_engine_args("vllm", {"max_model_len": 1024, "enforce_eager": True}, 1) == (
        {"kv_cache": "fit"}, None)
    for explicit in ({"kv_cache": "share", "max_model_len": 1024}, {"kv_cache": "fit", "max_model_len": 1024},
                     {"gpu_memory_utilization": 0.3, "max_model_len": 1024}, {"kv_cache_memory_bytes": 1 << 30}):
        assert vllm_kv.awake_engine_args("vllm", explicit, 1) == ({}, None)  # the user's choice stands
    assert vllm_kv.awake_engine_args("vllm", {"max_model_len": 1024}, max_staleness=0) == ({}, None)  # sync: sleeps
    assert vllm_kv.awake_engine_args("hf", {"max_model_len": 1024}, 1) == ({}, None)  # hf shares the module
    assert vllm_kv.awake_engine_args("sglang", {}, 1) == ({}, None)