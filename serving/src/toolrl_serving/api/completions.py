"""POST /v1/completions: OpenAI (legacy) text completions, raw prompt in, text out (no chat template)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from toolrl_serving.api.common import FinishReason, Int, SamplingRequest, Usage, check_model, new_id, now
from toolrl_serving.api.streaming import EventStreamResponse, event_stream, prefetch, sse
from toolrl_serving.deps import Authorized, EngineDep, MetricsDep, SettingsDep
from toolrl_serving.engine import ServingEngine
from toolrl_serving.errors import ERROR_RESPONSES, APIError, invalid
from toolrl_serving.limits import unless_disconnected
from toolrl_serving.tool_calls import render_error

router = APIRouter(tags=["openai"])


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[Int] | list[list[Int]] = Field(
        description="A prompt, a list of prompts, or token ids (one list per prompt).")
    max_tokens: Int | None = Field(None, ge=1, description="Most tokens to generate per choice (default 16, as "
                                   "OpenAI; capped by the server's limit).")
    logprobs: Int | None = Field(None, ge=0, le=5,
                                 description="0: log-probability of each sampled token; >0 unsupported.")
    echo: bool | None = Field(False, description="Only false is supported.")
    suffix: str | None = Field(None, description="Not supported; leave it out.")
    best_of: Int | None = Field(None, ge=1, description="Only equal to n (or left out) is supported.")


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(description="Each generated token's text.")
    token_logprobs: list[float] = Field(description="Each one's log-probability.")
    top_logprobs: list[Any] | None = Field(None, description="Not supported (null).")
    text_offset: list[int] = Field(description="Offset of each token in the choice's text.")


class CompletionChoice(BaseModel):
    index: int = Field(description="prompt index * n + sample index.")
    text: str = Field(description="The generated text (stop string removed).")
    finish_reason: FinishReason | None = Field(description="stop, length or abort.")
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


def _prompts(body: CompletionRequest, engine: ServingEngine) -> list[list[int]]:
    p = body.prompt
    limits = engine.settings.limits
    if isinstance(p, str):
        lists = [engine.encode(p)]
    elif not p:
        raise invalid("prompt", "prompt is an empty list; send a string or a list of strings")
    elif all(isinstance(x, str) for x in p):
        lists = [engine.encode(x) for x in p]  # type: ignore[arg-type]
    elif all(isinstance(x, int) for x in p):
        lists = [list(p)]  # type: ignore[arg-type]
    else:
        lists = [list(x) for x in p]  # type: ignore[arg-type]
    if len(lists) > limits.max_prompts:
        raise invalid("prompt", f"{len(lists)} prompts in one request; at most {limits.max_prompts}",
                      code="limit_exceeded")
    vocab = len(engine.tokenizer)
    for i, ids in enumerate(lists):
        if any(t < 0 or t >= vocab for t in ids):
            raise invalid("prompt", f"prompt {i} has token ids outside the vocabulary [0, {vocab})")
    return lists


def _logprobs(engine: ServingEngine, ids: tuple[int, ...], lps: tuple[float, ...]) -> CompletionLogprobs:
    tokens, offsets, pos = [], [], 0
    for t in ids:
        s = engine.tokenizer.decode([t])
        tokens.append(s)
        offsets.append(pos)
        pos += len(s)
    return CompletionLogprobs(tokens=tokens, token_logprobs=list(lps), text_offset=offsets)


@router.post("/v1/completions", response_model=CompletionResponse, dependencies=[Authorized],
             responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}},
                                                 "description": "JSON, or server-sent events when stream is true."}},
             summary="Create a text completion")
async def create_completion(body: CompletionRequest, request: Request, engine: EngineDep, settings: SettingsDep,
                            metrics: MetricsDep) -> Any:
    started = time.perf_counter()
    check_model(body.model, settings.model_name)
    max_tokens = body.max_tokens or min(16, settings.limits.max_tokens)
    body.check_common(settings.limits, max_tokens)
    if body.echo:
        raise invalid("echo", "echo is not supported; leave it false", code="unsupported")
    if body.suffix:
        raise invalid("suffix", "suffix is not supported; leave it out", code="unsupported")
    if body.best_of not in (None, body.n):
        raise invalid("best_of", "best_of other than n is not supported", code="unsupported")
    if body.logprobs:
        raise invalid("logprobs", "only logprobs 0 (the sampled tokens) is supported", code="unsupported")
    if body.logprobs is not None and body.stream:
        raise invalid("logprobs", "logprobs are not available when streaming", code="unsupported")
    prompts = _prompts(body, engine)
    for ids in prompts:
        engine.check_prompt(ids, max_tokens, "prompt")
    if len(prompts) * body.n > settings.limits.max_prompts * settings.limits.max_n:
        raise invalid("n", "too many choices in one request (prompts x n)", code="limit_exceeded")
    sampling = body.sampling(max_tokens)
    rid = new_id("cmpl")
    prompt_tokens = sum(len(p) for p in prompts)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = await unless_disconnected(request, prefetch(engine.stream(prompts, sampling, body.n, request_id=rid)))
        chunks = _chunks(rid, settings.model_name, events, prompt_tokens, include_usage, metrics, started)
        return EventStreamResponse(event_stream(chunks, metrics), headers={"Cache-Control": "no-cache"})
    choices = await unless_disconnected(request, engine.generate(prompts, sampling, body.n, rid))
    completion_tokens = sum(len(c.token_ids) for c in choices)
    metrics.count_tokens(prompt_tokens, completion_tokens)
    out = [CompletionChoice(index=c.index, text=c.text, finish_reason=c.finish_reason,
                            logprobs=_logprobs(engine, c.token_ids, c.logprobs) if body.logprobs == 0 else None)
           for c in choices]
    return CompletionResponse(id=rid, created=now(), model=settings.model_name, choices=out,
                              usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                          total_tokens=prompt_tokens + completion_tokens))


async def _chunks(rid: str, model: str, events: Any, prompt_tokens: int, include_usage: bool,
                  metrics: Any, started: float) -> AsyncIterator[str]:
    created = now()
    first = True
    generated = 0

    def chunk(index: int, text: str, finish: str | None = None) -> str:
        return sse(CompletionResponse(id=rid, created=created, model=model, choices=[
            CompletionChoice(index=index, text=text, finish_reason=finish)]))

    try:
        async for ev in events:
            generated += len(ev.token_ids)
            if ev.text:
                if first:
                    metrics.ttft.observe(time.perf_counter() - started)
                    first = False
                yield chunk(ev.index, ev.text)
            if ev.finish_reason is not None:
                rest = ev.stream.rest(ev.full_text) if ev.stream is not None and ev.full_text is not None else ""
                yield chunk(ev.index, rest, ev.finish_reason)
    except APIError as exc:
        yield render_error(exc)
        return
    finally:
        metrics.count_tokens(prompt_tokens, generated)
        await events.aclose()
    if include_usage:
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=generated, total_tokens=prompt_tokens + generated)
        yield sse(CompletionResponse(id=rid, created=created, model=model, choices=[], usage=usage))
    yield "data: [DONE]\n\n"
