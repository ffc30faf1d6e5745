"""Server-sent events: formatting, a first event fetched before the headers go out, cancellation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


def sse(payload: BaseModel) -> str:
    """`data: {json}` + blank line; empty delta fields are left out, as OpenAI does."""
    data = payload.model_dump(mode="json")
    for choice in data.get("choices", ()):
        delta = choice.get("delta")
        if isinstance(delta, dict):
            choice["delta"] = {k: v for k, v in delta.items() if v is not None}
    if data.get("usage") is None:
        data.pop("usage", None)
    return "data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n\n"


class Prefetched:
    """An async iterator whose first item was already awaited (so errors like 'queue full' become a
    proper HTTP status before any 200 header is sent)."""

    def __init__(self, first: Any, rest: AsyncIterator[Any], done: bool):
        self._first = first
        self._rest = rest
        self._done = done
        self._given = False

    def __aiter__(self) -> Prefetched:
        return self

    async def __anext__(self) -> Any:
        if not self._given:
            self._given = True
            if self._done:
                raise StopAsyncIteration
            return self._first
        return await self._rest.__anext__()

    async def aclose(self) -> None:
        close = getattr(self._rest, "aclose", None)
        if close is not None:
            await close()


async def prefetch(events: AsyncIterator[Any]) -> Prefetched:
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        return Prefetched(None, events, True)
    return Prefetched(first, events, False)


async def event_stream(chunks: AsyncIterator[str], metrics: Any) -> AsyncIterator[str]:
    """Yields the chunks; if the client leaves (the task is cancelled), the generation is closed at once."""
    try:
        async for c in chunks:
            yield c
    except asyncio.CancelledError:
        metrics.cancelled.inc()
        raise
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


class EventStreamResponse(StreamingResponse):
    """A `text/event-stream` response that always closes its generator when the response ends,
    so a client that disconnects stops its generation at once (not when the garbage collector runs)."""

    media_type = "text/event-stream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
