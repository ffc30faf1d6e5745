"""The server's view of the model: prompt rendering, the shared batching engine, answer parsing.

`ServingEngine` owns no generation loop of its own. Tokens come from a
registered rollout backend (hf by default: the same batching engine training
uses), prompts are rendered with the model's chat template through
`toolrl.chat`, and tool calls are parsed with the registered training parser,
so what was trained is what answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from toolrl.rollout.base import (
    GenerationRequest,
    GenerationResult,
    PromptTooLongError,
    QueueFullError,
    SamplingParams,
    StreamChunk,
)

from toolrl_serving.errors import APIError
from toolrl_serving.settings import ServerSettings
from toolrl_serving.textstream import TextStream, final_text
from toolrl_serving.tool_calls import ToolCallParser

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    """One finished answer."""

    index: int
    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: str  # stop | length | abort


@dataclass(frozen=True)
class StreamEvent:
    """A piece of one choice's answer while it streams."""

    index: int
    text: str = ""  # text that may be shown now
    token_ids: tuple[int, ...] = ()
    finish_reason: str | None = None  # set on the last event of the choice
    full_text: str | None = None  # on the last event: the whole answer (for tool-call parsing)
    stream: TextStream | None = None  # on the last event: the decoder state (what was sent)


@dataclass(frozen=True)
class EngineStats:
    """What /metrics and /health report about the engine."""

    queue_depth: int = 0
    batch_size: int = 0
    active: int = 0
    extra: Mapping[str, float] | None = None


def seeded(sampling: SamplingParams, index: int) -> SamplingParams:
    """Choice `index` of a seeded request gets seed+index: reproducible, yet the n choices differ."""
    if sampling.seed is None or index == 0:
        return sampling
    return replace(sampling, seed=(sampling.seed + index) % (2**63))


class ServingEngine:
    """Tokenizer + chat template + tool parser + a rollout backend."""

    def __init__(self, *, backend: Any, tokenizer: Any, parser: Any, settings: ServerSettings,
                 context_length: int | None = None):
        self.backend = backend
        self.tokenizer = tokenizer
        self.parser = parser
        self.settings = settings
        self.context_length = context_length

    # ---------------------------------------------------------------- prompts

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render_chat(self, messages: Sequence[Mapping[str, Any]],
                    tools: Sequence[Mapping[str, Any]] | None) -> list[int]:
        """Prompt ids through toolrl.chat (the training rendering, tools included)."""
        from toolrl_serving.rendering import render_chat

        return render_chat(self.tokenizer, messages, tools)

    def chat_sampling(self, sampling: SamplingParams) -> SamplingParams:
        """A chat answer also ends at the template's end-of-turn token (as in training)."""
        from toolrl_serving.rendering import end_of_turn_ids

        ids = tuple(dict.fromkeys([*sampling.stop_token_ids, *end_of_turn_ids(self.tokenizer)]))
        return replace(sampling, stop_token_ids=ids)

    def check_prompt(self, prompt_ids: Sequence[int], max_tokens: int, param: str) -> None:
        limit = self.settings.limits.max_prompt_tokens
        if len(prompt_ids) > limit:
            raise APIError(400, f"the prompt has {len(prompt_ids)} tokens, above this server's limit of {limit}; "
                           "shorten it", param=param, code="context_length_exceeded")
        if self.context_length and len(prompt_ids) + max_tokens > self.context_length:
            raise APIError(400, f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) exceeds the model's "
                           f"context length of {self.context_length}; shorten the prompt or lower max_tokens",
                           param="max_tokens", code="context_length_exceeded")
        if not prompt_ids:
            raise APIError(400, "the prompt is empty", param=param, code="invalid_value")

    # ------------------------------------------------------------- generation

    @staticmethod
    def _jobs(prompts: Sequence[Sequence[int]], sampling: SamplingParams, n: int,
              request_id: str) -> list[GenerationRequest]:
        """Choice `p * n + j` is sample j of prompt p (OpenAI's order); ids are `<request id>/<choice>`."""
        return [GenerationRequest(prompt_ids=tuple(p), sampling=seeded(sampling, j),
                                  request_id=f"{request_id}/{pi * n + j}")
                for pi, p in enumerate(prompts) for j in range(n)]

    async def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams, n: int,
                       request_id: str = "") -> list[Choice]:
        """n answers per prompt; the backend batches them with every other request in flight."""
        jobs = self._jobs(prompts, sampling, n, request_id)
        async with _backend_errors(self.settings):
            results: list[GenerationResult] = await _gather_cancelling([self.backend.agenerate(r) for r in jobs])
        out = []
        for i, r in enumerate(results):
            text, found = final_text(self.tokenizer, r.token_ids, sampling.stop)
            reason = "stop" if found else r.finish_reason
            out.append(Choice(i, text, tuple(r.token_ids), tuple(r.logprobs), reason))
        return out

    async def stream(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams, n: int,
                     tool_parser: ToolCallParser | None = None, request_id: str = "") -> AsyncIterator[StreamEvent]:
        """Events of every choice as tokens arrive, interleaved; closing the iterator cancels them all."""
        queue: asyncio.Queue[StreamEvent | BaseException] = asyncio.Queue()
        jobs = self._jobs(prompts, sampling, n, request_id)

        async def one(index: int, request: GenerationRequest) -> None:
            try:
                async for event in self._stream_one(request, index, tool_parser):
                    queue.put_nowait(event)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # handed to the consumer, which raises it
                queue.put_nowait(exc)

        tasks = [asyncio.create_task(one(i, r)) for i, r in enumerate(jobs)]
        try:
            finished = 0
            while finished < len(jobs):
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item.finish_reason is not None:
                    finished += 1
                yield item
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _stream_one(self, request: GenerationRequest, index: int,
                          tool_parser: ToolCallParser | None) -> AsyncIterator[StreamEvent]:
        sampling = request.sampling
        if tool_parser is None:
            text = TextStream(self.tokenizer, sampling.stop)
        else:
            text = TextStream(self.tokenizer, sampling.stop, tool_parser.hold_markers, tool_parser.hold_leading,
                              tool_parser.hold_all)
        finish: str | None = None
        async with _backend_errors(self.settings):
            agen = self.backend.astream(request)
            try:
                chunk: StreamChunk
                async for chunk in agen:
                    ids, reason = chunk.token_ids, chunk.finish_reason
                    delta = text.push(ids)
                    if delta or ids:
                        yield StreamEvent(index, delta, tuple(ids))
                    if reason is not None:
                        finish = reason
                        break
                    if text.stopped:
                        finish = "stop"
                        break  # leaving the loop closes the backend stream: its sequence is dropped
            finally:
                with contextlib.suppress(Exception):
                    await agen.aclose()
        full = text.finish()
        if text.stopped:
            finish = "stop"  # the server saw the stop string first (the engine checks a token window)
        yield StreamEvent(index, "", (), finish or "abort", full, text)

    def stats(self) -> EngineStats:
        fn = getattr(self.backend, "stats", None)
        if fn is None:
            return EngineStats()
        raw = fn()
        raw = raw if isinstance(raw, Mapping) else getattr(raw, "__dict__", {})
        queue, batch = int(raw.get("queue_depth", 0) or 0), int(raw.get("batch_size", 0) or 0)
        return EngineStats(
            queue_depth=queue,
            batch_size=batch,
            active=queue + batch,
            extra={k: float(v) for k, v in raw.items() if isinstance(v, (int, float))},
        )

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()


async def _gather_cancelling(coros: list[Any]) -> list[Any]:
    """gather() that cancels the siblings when one fails or the caller is cancelled."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def queue_full_error(settings: ServerSettings) -> APIError:
    return APIError(503, f"the server is at capacity (queue of {settings.max_queue} requests is full); retry after "
                    f"{settings.retry_after_s} s", type="service_unavailable_error", code="queue_full",
                    headers={"Retry-After": str(settings.retry_after_s)})


@contextlib.asynccontextmanager
async def _backend_errors(settings: ServerSettings) -> AsyncIterator[None]:
    """The backend's 'queue full' becomes a 503 with Retry-After, 'prompt too long' a 400."""
    try:
        yield
    except QueueFullError as exc:
        raise queue_full_error(settings) from exc
    except PromptTooLongError as exc:
        raise APIError(400, exc.what, param="messages", code="context_length_exceeded") from exc
