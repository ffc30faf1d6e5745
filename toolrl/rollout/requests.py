"""Request handles shared by the backends' engine threads, and their asyncio faces.

An engine thread (hf, vllm, sglang) owns its engine; callers hand it a
`RequestHandle` and get the result on `handle.future` (a
`concurrent.futures.Future`), tokens through `handle.on_token` as they are
sampled, and abort it with `handle.cancel()`. `await_handle` and
`stream_handle` turn that into `agenerate` / `astream` with the same
semantics everywhere: cancelling the awaiting task (a client disconnect)
aborts the request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from toolrl.rollout.base import GenFinishReason, GenerationRequest, GenerationResult, StreamChunk

logger = logging.getLogger(__name__)

StreamCallback = Callable[[StreamChunk], None]


class Handle(Protocol):
    future: concurrent.futures.Future

    def cancel(self) -> None: ...


@dataclass(eq=False)
class RequestHandle:
    """One request in an engine thread: accumulates tokens, streams them, resolves the future."""

    request: GenerationRequest
    request_id: str
    on_token: StreamCallback | None = None
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    cancelled: bool = False
    on_cancel: Callable[[], None] | None = None  # lets an engine abort at once (sglang) instead of at its next step
    submitted: float = field(default_factory=time.perf_counter)

    def cancel(self) -> None:
        # (the future may already be cancelled: asyncio.wrap_future cancels it with the awaiting task)
        if self.cancelled:
            return
        self.cancelled = True
        if self.on_cancel is not None:
            self.on_cancel()

    def emit(self, token_ids: Sequence[int], logprobs: Sequence[float], finish: GenFinishReason | None = None) -> None:
        """Record new tokens (and stream them); `finish` also resolves the future."""
        self.tokens.extend(int(t) for t in token_ids)
        self.logprobs.extend(float(x) for x in logprobs)
        if self.on_token is not None and (token_ids or finish is not None):
            try:
                self.on_token(StreamChunk(tuple(token_ids), tuple(logprobs), finish))
            except Exception:  # a broken consumer must not stop the engine
                logger.exception("stream callback failed; cancelling request %s", self.request_id)
                self.cancelled = True
        if finish is not None:
            self.finish(finish, streamed=True)

    def finish(self, reason: GenFinishReason, *, streamed: bool = False) -> None:
        if self.future.done():
            return
        if not streamed and self.on_token is not None:
            try:
                self.on_token(StreamChunk((), (), reason))
            except Exception:
                logger.exception("stream callback failed")
        self.future.set_result(GenerationResult(
            token_ids=tuple(self.tokens), logprobs=tuple(self.logprobs), finish_reason=reason,
            request_id=self.request.request_id, prompt_tokens=len(self.request.prompt_ids)))

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


async def await_handle(handle: Handle) -> GenerationResult:
    """Await a handle's result; cancelling the awaiting task aborts the request."""
    try:
        return await asyncio.wrap_future(handle.future)
    except asyncio.CancelledError:
        handle.cancel()
        raise


async def stream_handle(submit: Callable[[StreamCallback], Handle]) -> AsyncIterator[StreamChunk]:
    """Submit with a stream callback and yield chunks until one carries a finish reason.

    Closing the iterator early (or cancelling its consumer) aborts the request.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[StreamChunk | None] = asyncio.Queue()

    def on_token(chunk: StreamChunk) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, chunk)

    handle = submit(on_token)
    handle.future.add_done_callback(lambda _f: loop.call_soon_threadsafe(queue.put_nowait, None))
    finished = False
    try:
        while True:
            chunk = await queue.get()
            if chunk is None:  # ended without a final chunk (an error, or nothing to sample)
                result = handle.future.result()  # raises the engine's exception, if any
                finished = True
                yield StreamChunk((), (), result.finish_reason)
                return
            if chunk.finish_reason is not None:
                finished = True
                yield chunk
                return
            yield chunk
    finally:
        if not finished:
            handle.cancel()
