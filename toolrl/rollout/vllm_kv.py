"""Sizing the `vllm` backend's KV cache to the batch it serves (`rollout.backend_args.kv_cache=fit`).

vLLM reserves a share of the card for its KV cache (`gpu_memory_utilization`, 0.92 by default in vLLM 0.25,
0.3 in our GPU benchmarks: 42 GiB of an H200). A trainer's engine never holds more than `max_num_seqs`
sequences of at most `max_model_len` tokens, which for a 0.5B model is a few GiB; the rest of the share is
memory the update cannot use. With the engine asleep during the update (synchronous mode) that costs little,
but an asynchronous run keeps the engine awake beside the update, so the whole share adds to its peak.

`kv_cache=fit` reserves instead `max_num_seqs x max_model_len` tokens (plus a margin) through vLLM's
`kv_cache_memory_bytes`, computed from the model's `config.json`:
2 (K and V) x layers x KV heads x head size x bytes per element.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from toolrl.errors import ToolrlError

WHERE = "rollout.backend_args.kv_cache"
MODES = ("share", "fit")
FIT_MARGIN = 1.1  # block rounding and a little headroom: a sequence's last block is partly empty
# With kv_cache_memory_bytes set, vLLM (0.25) reads gpu_memory_utilization only in its start-up check that the
# card has that share free (vllm/v1/worker/utils.py, request_memory); its default (0.92) fails that check
# whenever a colocated trainer already holds more than 8% of the card. `fit` passes this share unless the user
# sets one.
FIT_START_SHARE = 0.05
_ELEMENT_BYTES = {"float32": 4, "float": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "half": 2,
                  "fp16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}


def element_bytes(dtype: str, config: dict[str, Any]) -> int:
    """Bytes per KV element for an engine dtype ("auto": the model's own `torch_dtype`/`dtype`)."""
    name = str(dtype).replace("torch.", "")
    if name == "auto":
        name = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16").replace("torch.", "")
    if name not in _ELEMENT_BYTES:
        raise ToolrlError(f"kv_cache=fit cannot size a KV cache of dtype {dtype!r}", where=WHERE,
                          fix="use model.dtype bfloat16/float16/float32, or set backend_args.kv_cache_memory_bytes")
    return _ELEMENT_BYTES[name]


def kv_bytes_per_token(config: dict[str, Any], dtype: str) -> int:
    """KV-cache bytes one token takes in every layer of a standard decoder (multi-head or grouped-query
    attention). Configs of other shapes (latent attention, no head counts) are refused with a fix."""
    cfg = config.get("text_config") or config  # multimodal wrappers keep the decoder's config inside
    if "kv_lora_rank" in cfg:
        raise ToolrlError("kv_cache=fit does not size latent-attention (MLA) caches", where=WHERE,
                          fix="set backend_args.kv_cache_memory_bytes or gpu_memory_utilization instead")
    try:
        layers = int(cfg["num_hidden_layers"])
        heads = int(cfg["num_attention_heads"])
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads)
    except (KeyError, TypeError, ValueError) as exc:
        raise ToolrlError(f"kv_cache=fit needs num_hidden_layers, num_attention_heads and hidden_size (or "
                          f"head_dim) in the model's config.json; {exc!r} is missing or not a number",
                          where=WHERE, fix="set backend_args.kv_cache_memory_bytes or gpu_memory_utilization") from exc
    return 2 * layers * kv_heads * head_dim * element_bytes(dtype, cfg)


def fit_kv_cache_bytes(model_path: str, dtype: str, max_num_seqs: int, max_model_len: int | None,
                       margin: float = FIT_MARGIN) -> int:
    """`kv_cache_memory_bytes` for `max_num_seqs` sequences of `max_model_len` tokens of the model at
    `model_path` (a folder with config.json)."""
    if not max_model_len:
        raise ToolrlError("kv_cache=fit needs backend_args.max_model_len: the longest sequence decides the size",
                          where=WHERE, fix="set rollout.backend_args.max_model_len (prompt plus new tokens)")
    if max_num_seqs < 1:
        raise ToolrlError(f"kv_cache=fit needs at least one sequence, not max_batch_size={max_num_seqs}",
                          where="rollout.max_batch_size", fix="set rollout.max_batch_size to 1 or more")
    path = Path(model_path) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ToolrlError(f"kv_cache=fit reads the model's config.json, and {path} could not be read: {exc}",
                          where=WHERE, fix="point model.name_or_path at a Hugging Face model folder, or set "
                                           "backend_args.kv_cache_memory_bytes") from exc
    tokens = int(max_num_seqs) * int(max_model_len)
    return int(math.ceil(tokens * kv_bytes_per_token(config, dtype) * margin))


def kv_cache_kwargs(mode: Any, llm_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The `vllm.LLM` keywords `backend_args.kv_cache` adds to `llm_kwargs` (the engine's other keywords, the
    user's backend_args included): nothing for "share" (vLLM's `gpu_memory_utilization`), `kv_cache_memory_bytes`
    for "fit", sized with the engine's own `max_num_seqs`, `max_model_len` and `kv_cache_dtype` (else `dtype`),
    and `gpu_memory_utilization` `FIT_START_SHARE` unless the user set one (vLLM then only checks it at start)."""
    if mode not in MODES:
        raise ToolrlError(f"backend_args.kv_cache must be one of {', '.join(MODES)}, not {mode!r}", where=WHERE,
                          fix='"fit" sizes the KV cache to max_batch_size x max_model_len; "share" (default) '
                              "takes gpu_memory_utilization of the card")
    if mode == "share":
        return {}
    if llm_kwargs.get("kv_cache_memory_bytes") is not None:
        raise ToolrlError("backend_args.kv_cache=fit computes kv_cache_memory_bytes, which is also set",
                          where=WHERE, fix="drop one of kv_cache=fit and kv_cache_memory_bytes")
    cache_dtype = str(llm_kwargs.get("kv_cache_dtype") or "auto")
    dtype = str(llm_kwargs.get("dtype") or "auto") if cache_dtype == "auto" else cache_dtype
    out: dict[str, Any] = {"kv_cache_memory_bytes": fit_kv_cache_bytes(str(llm_kwargs["model"]), dtype,
                                                                       int(llm_kwargs["max_num_seqs"]),
                                                                       llm_kwargs.get("max_model_len"))}
    if llm_kwargs.get("gpu_memory_utilization") is None:
        out["gpu_memory_utilization"] = FIT_START_SHARE
    return out


MEMORY_KEYS = ("gpu_memory_utilization", "kv_cache_memory_bytes", "kv_cache")


def awake_engine_args(backend: str, backend_args: dict[str, Any], max_staleness: int
                      ) -> tuple[dict[str, Any], str | None]:
    """Backend arguments to add for an asynchronous run's colocated vLLM engine, which stays awake beside every
    update, and a warning to log. When nothing sizes the engine's memory (none of `MEMORY_KEYS`), vLLM would take
    0.92 of the card (vLLM 0.25) and leave the trainer less than a tenth: with `max_model_len` set the engine gets
    `kv_cache=fit` (measured on an H100: the asynchronous peak under TRL-vLLM's, docs/BENCHMARKS.md); without it,
    a warning. Synchronous runs (the engine sleeps during the update), other backends and any explicit setting
    (including `kv_cache=share`) are left as they are."""
    if backend != "vllm" or max_staleness <= 0 or any(k in backend_args for k in MEMORY_KEYS):
        return {}, None
    if backend_args.get("max_model_len"):
        return {"kv_cache": "fit"}, None
    return {}, ("trainer.async_rollouts keeps the vllm engine awake beside every update, and no "
                "rollout.backend_args.gpu_memory_utilization, kv_cache_memory_bytes or kv_cache is set: vLLM takes "
                "0.92 of the card by default (vLLM 0.25), leaving the trainer less than a tenth. Set "
                "rollout.backend_args.max_model_len (the longest prompt plus response) and the engine reserves only "
                "the batch's KV cache (kv_cache=fit, the default then), or set gpu_memory_utilization.")
