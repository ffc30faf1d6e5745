"""The `hf` rollout backend: Hugging Face transformers, CPU or GPU, the default.

    backend = HFBackend(BackendSettings(model_path="...", max_batch_size=32))
    [result] = backend.generate([GenerationRequest(prompt_ids=(...), sampling=SamplingParams(max_tokens=64))])
    result = await backend.agenerate(request)          # concurrent callers share batches
    async for chunk in backend.astream(request): ...   # tokens as they are sampled

Generation runs in `HFEngine` (continuous batching on one background thread).
With `BackendSettings.module` the backend generates with the caller's live
module (a colocated trainer's policy): no copy, and `update_weights` is only
needed when the weights come from elsewhere.

`rollout.backend_args` understood here: `max_queue` (requests that may wait,
default 4096; beyond it `agenerate`/`astream` raise `QueueFullError`),
`max_prefill_tokens` (prompt tokens prefilled together, default 8192),
`num_threads` (torch CPU threads), `attn_implementation` (default "sdpa"),
`decode_attention` (switch an sdpa model to `toolrl.rollout.hf_attention`'s
matmul attention for decode steps; default false), `prefix_cache_mb` (memory for
the keys/values of finished requests that later prompts continue, e.g. the next
turn of an episode; default 1024, 0 = off), `prefix_min_tokens` (shortest shared
prefix worth reusing, default 32).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import torch

from toolrl.errors import ToolrlError
from toolrl.rollout.base import BackendSettings, GenerationRequest, GenerationResult, StreamChunk
from toolrl.rollout.hf_engine import HFEngine
from toolrl.rollout.requests import await_handle, stream_handle

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(path: str, dtype: str, device: torch.device, attn_implementation: str = "sdpa") -> Any:
    from transformers import AutoModelForCausalLM

    if dtype not in _DTYPES:
        raise ToolrlError(f"unknown dtype {dtype!r}", where="model.dtype", fix=f"use one of {sorted(_DTYPES)}")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[dtype], attn_implementation=attn_implementation)
    return model.to(device).eval()


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _try_load_tokenizer(path: str) -> Any:
    """The folder's tokenizer, or None: the backend works on ids and needs one only for stop strings."""
    try:
        return load_tokenizer(path)
    except Exception as exc:
        logger.info("no tokenizer loaded from %s (%s): stop strings will be unavailable", path, exc)
        return None


def eos_ids_of(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends generation: the generation config's EOS (Qwen lists two) and the tokenizer's."""
    ids: list[int] = []
    gen = getattr(model, "generation_config", None)
    for src in (getattr(gen, "eos_token_id", None), getattr(model.config, "eos_token_id", None),
                getattr(tokenizer, "eos_token_id", None) if tokenizer is not None else None):
        for i in src if isinstance(src, (list, tuple)) else [src]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    return ids


class HFBackend:
    """Rollout backend on a Hugging Face causal LM with continuous batching (see module doc)."""

    name = "hf"

    def __init__(self, settings: BackendSettings):
        extra = dict(settings.extra or {})
        if "num_threads" in extra:
            torch.set_num_threads(int(extra["num_threads"]))
        self.settings = settings
        self.tokenizer = settings.tokenizer or _try_load_tokenizer(settings.model_path)
        if settings.module is not None:
            self.model = settings.module
            device = next(self.model.parameters()).device
        else:
            device = resolve_device(settings.device)
            self.model = load_model(settings.model_path, settings.dtype, device,
                                    extra.get("attn_implementation", "sdpa"))
        self.device = device
        if torch.device(device).type == "cuda":
            logger.warning(
                "rollout.backend=hf on a GPU: this backend is built for CPU rollouts; on a GPU its per-token Python "
                "work makes it slower than HF generate (docs/BENCHMARKS.md, GPU section) and far slower than vLLM. "
                "For GPU training use rollout.backend=vllm (pip install 'toolrl[vllm]') or sglang.")
        self.engine = HFEngine(
            self.model,
            eos_token_ids=eos_ids_of(self.model, self.tokenizer),
            max_batch_size=settings.max_batch_size,
            max_queue=int(extra.get("max_queue", 4096)),
            max_prefill_tokens=int(extra.get("max_prefill_tokens", 8192)),
            seed=settings.seed,
            tokenizer=self.tokenizer,
            device=device,
            decode_attention=bool(extra.get("decode_attention", False)),
            prefix_cache_bytes=int(float(extra.get("prefix_cache_mb", 1024)) * (1 << 20)),
            prefix_min_tokens=int(extra.get("prefix_min_tokens", 32)),
        )

    # ------------------------------------------------------------------ generation
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Generate a batch; blocks until all are done. Results are in request order.

        Every request is checked before any is queued: a bad one raises (naming its field) and
        none of the batch runs."""
        checked = [self.engine.check(r) for r in requests]
        seqs = [self.engine.submit(r, block=True) for r in checked]
        return [s.future.result() for s in seqs]

    async def agenerate(self, request: GenerationRequest) -> GenerationResult:
        """Generate one request; concurrent callers are batched together. Cancelling the
        awaiting task aborts the request. Raises `QueueFullError` when the queue is full."""
        return await await_handle(self.engine.submit(request, block=False))

    def astream(self, request: GenerationRequest) -> AsyncIterator[StreamChunk]:
        """Yield tokens as they are sampled; the last chunk has `finish_reason` set.

        Closing the iterator or cancelling its consumer (a client disconnect) aborts the request.
        Raises `QueueFullError` (on first iteration) when the queue is full.
        """
        return stream_handle(lambda on_token: self.engine.submit(request, on_token=on_token, block=False))

    # ------------------------------------------------------------------ weights and lifecycle
    def update_weights(self, state_dict: Mapping[str, Any]) -> None:
        """Copy new weights into the model (between batches; generation waits meanwhile).

        Names are those of the HF model's `state_dict()`; a name the model does not have is an
        error (it would otherwise be ignored silently). Tensors that already are the model's own
        (colocated, shared module) are skipped.
        """
        own = self.model.state_dict()
        unknown = [k for k in state_dict if k not in own]
        if unknown:
            raise ToolrlError(
                f"{len(unknown)} weight name(s) are not in the rollout model, e.g. {unknown[:3]}",
                where="hf backend update_weights",
                fix="pass the HF model's state_dict names (merge LoRA adapters and strip wrapper prefixes first)",
            )
        with self.engine.model_lock, torch.no_grad():
            for name, value in state_dict.items():
                target = own[name]
                if isinstance(value, torch.Tensor) and value.data_ptr() == target.data_ptr():
                    continue
                target.copy_(value if isinstance(value, torch.Tensor) else torch.as_tensor(value))

    def stats(self) -> dict[str, float]:
        """`queue_depth`, `batch_size` and counters (for `rollout/...` metrics and Prometheus)."""
        return self.engine.stats()

    def sleep(self) -> None:
        """Free the KV-cache buffers (a colocated trainer gets the memory back); they are
        reallocated by the next request."""
        self.engine.release_cache()

    def wake(self) -> None:
        """Nothing to do: buffers come back with the next request."""

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> HFBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
