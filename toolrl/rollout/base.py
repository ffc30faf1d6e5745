"""The RolloutBackend protocol: token ids in, token ids and logprobs out.

A backend never sees text. The agent loop renders prompts with the chat
template, hands over token ids, and appends exactly the ids it gets back.
Backends are registered through `register_rollout_backends`; their factory
receives a `BackendSettings`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from toolrl.errors import ToolrlError

GenFinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one request.

    Attributes:
        temperature: 0 means greedy.
        top_p: nucleus sampling mass (1.0 = off).
        top_k: keep the k most likely tokens (0 = off).
        max_tokens: most new tokens to generate.
        stop_token_ids: extra ids that end generation (EOS always does); the stop id is kept in the output.
        stop: strings that end generation; the output is cut after the token that completes one.
        seed: per-request seed for reproducible sampling (None = from the backend's generator).
        ignore_eos: keep sampling past the end-of-sequence token (benchmarks that need fixed
            lengths); `stop_token_ids` and `stop` still end the request.
        min_tokens: no stop (EOS, stop ids, stop strings) before this many new tokens; the
            vllm and sglang backends mask the stop tokens until then, the hf backend refuses
            values above 0 (InvalidRequestError).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 256
    stop_token_ids: tuple[int, ...] = ()
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False
    min_tokens: int = 0


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: tuple[int, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = ""


@dataclass(frozen=True)
class GenerationResult:
    """What was sampled: ids, the log-probability of each, why it stopped.

    `logprobs[i]` is log softmax(logits / T)[token_ids[i]] with T the request's temperature
    (T = 1 for greedy requests): the model's distribution at the sampling temperature, before
    top-k/top-p truncation. A trainer's teacher-forced recompute with the same T matches it
    (docs/rollout.md, "Logprobs").
    """

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: GenFinishReason
    request_id: str = ""
    prompt_tokens: int = 0


@dataclass(frozen=True)
class StreamChunk:
    """A piece of a streamed generation: the tokens sampled since the last chunk.

    The last chunk of a stream has `finish_reason` set (it may carry no tokens).
    """

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: GenFinishReason | None = None


class QueueFullError(ToolrlError):
    """The backend's request queue is full; the caller should retry later (HTTP 503/429)."""


class PromptTooLongError(ToolrlError):
    """A prompt does not fit the model's context window."""


class InvalidRequestError(ToolrlError, ValueError):
    """A generation request the backend cannot run (a sampling value out of range, a token id
    outside the vocabulary, an empty prompt). `field` names the offending field
    (`temperature`, `top_p`, `prompt_ids`, ...), so a server can answer 400 naming it."""

    def __init__(self, what: str, *, field: str, where: str | None = None, fix: str | None = None):
        self.field = field
        super().__init__(what, where=where, fix=fix)


@dataclass(frozen=True)
class BackendSettings:
    """What a backend factory receives.

    Attributes:
        model_path: a local HF folder (already resolved by `toolrl.models.resolve`).
        dtype: "float32" | "bfloat16" | "float16".
        device: "cpu", "cuda", "cuda:0" … or "auto".
        max_batch_size: most sequences decoded together.
        module: an in-process torch module to generate with (colocated policy: the
            hf backend then uses the live training weights, no copy).
        tokenizer: an already-loaded tokenizer, if the caller has one.
        extra: backend-specific options from `rollout.backend_args`.
    """

    model_path: str
    dtype: str = "float32"
    device: str = "auto"
    max_batch_size: int = 32
    module: Any = None
    tokenizer: Any = None
    seed: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class RolloutBackend(Protocol):
    """Where tokens are generated (hf, vllm, sglang, …)."""

    name: str

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Generate for a batch of requests; results are in request order."""
        ...

    async def agenerate(self, request: GenerationRequest) -> GenerationResult:
        """Generate one request; concurrent calls are batched together by the backend."""
        ...

    def astream(self, request: GenerationRequest) -> AsyncIterator[StreamChunk]:
        """Generate one request, yielding tokens as they are sampled; closing the iterator
        (or cancelling the task that consumes it) aborts the request."""
        ...

    def update_weights(self, state_dict: Mapping[str, Any]) -> None:
        """Load new policy weights (names as in the HF model's state_dict)."""
        ...

    def stats(self) -> Mapping[str, float]:
        """Gauges and counters for metrics: at least `queue_depth` and `batch_size`."""
        ...

    def sleep(self) -> None:
        """Free accelerator memory between rollouts where the engine can (no-op otherwise)."""
        ...

    def wake(self) -> None:
        """Undo `sleep()`."""
        ...

    def close(self) -> None:
        ...
