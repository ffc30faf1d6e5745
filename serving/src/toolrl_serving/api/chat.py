"""POST /v1/chat/completions: OpenAI chat completions, tool calls and streaming.

The prompt is the model's own chat template with the tools (as in training);
tool calls in the answer are found by the training tool-call parser and come
back as OpenAI `tool_calls`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, model_validator

from toolrl_serving.api.common import (
    STRICT,
    Int,
    FinishReason, SamplingRequest, Usage, check_model, new_id, now,
)
from toolrl_serving.api.streaming import EventStreamResponse, event_stream, prefetch, sse
from toolrl_serving.deps import Authorized, EngineDep, MetricsDep, SettingsDep
from toolrl_serving.engine import Choice, ServingEngine
from toolrl_serving.errors import ERROR_RESPONSES, APIError, invalid
from toolrl_serving.limits import unless_disconnected
from toolrl_serving.tool_calls import ToolCallParser, openai_tool_calls, render_error

router = APIRouter(tags=["openai"])


# ------------------------------------------------------------------ request


class TextPart(BaseModel):
    model_config = STRICT

    type: Literal["text"] = Field(description="Only text parts are supported.")
    text: str = Field(description="The text.")


class FunctionCallIn(BaseModel):
    model_config = STRICT

    name: str = Field(description="The function the assistant called.")
    arguments: str = Field(description="Its arguments, a JSON object encoded as a string (OpenAI's format).")


class ToolCallIn(BaseModel):
    model_config = STRICT

    id: str = Field(description="The call's id; tool messages answer it through tool_call_id.")
    type: Literal["function"] = Field("function", description="Always 'function'.")
    function: FunctionCallIn = Field(description="The called function and its arguments.")


Content = str | list[TextPart]


class _Message(BaseModel):
    model_config = STRICT

    name: str | None = Field(None, description="Optional speaker name.")

    def text(self) -> str:
        content = getattr(self, "content", None)
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        return "\n".join(p.text for p in content)


class SystemMessage(_Message):
    role: Literal["system", "developer"] = Field(description="Instructions ('developer' is read as 'system').")
    content: Content = Field(description="Text, or a list of text parts.")


class UserMessage(_Message):
    role: Literal["user"] = Field(description="The user.")
    content: Content = Field(description="Text, or a list of text parts.")


class AssistantMessageIn(_Message):
    role: Literal["assistant"] = Field(description="An earlier answer of the model.")
    content: Content | None = Field(None, description="Its text (may be null when it only called tools).")
    tool_calls: list[ToolCallIn] | None = Field(None, description="The calls it made.")

    @model_validator(mode="after")
    def _content_or_calls(self) -> AssistantMessageIn:
        if self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs 'content' or 'tool_calls'")
        return self


class ToolMessage(_Message):
    role: Literal["tool"] = Field(description="A tool's result.")
    content: Content = Field(description="The result text.")
    tool_call_id: str | None = Field(None, description="The call this result answers.")


ChatMessage = Annotated[SystemMessage | UserMessage | AssistantMessageIn | ToolMessage, Field(discriminator="role")]


class FunctionDefinition(BaseModel):
    model_config = STRICT

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="Function name (letters, digits, _ . -).")
    description: str | None = Field(None, description="What the function does; shown to the model.")
    parameters: dict[str, Any] | None = Field(None, description="JSON Schema of the arguments object.")
    strict: bool | None = Field(None, description="Accepted for compatibility; decoding is not constrained.")


class ToolDefinition(BaseModel):
    model_config = STRICT

    type: Literal["function"] = Field(description="Only function tools exist.")
    function: FunctionDefinition = Field(description="The function the model may call.")


class NamedFunction(BaseModel):
    model_config = STRICT

    name: str = Field(description="Function name.")


class NamedToolChoice(BaseModel):
    model_config = STRICT

    type: Literal["function"] = Field(description="Always 'function'.")
    function: NamedFunction = Field(description="The function the model must call.")


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    tools: list[ToolDefinition] | None = Field(None, description="Functions the model may call.")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="'auto' (default with tools) or 'none'; forcing a call is not supported.")
    parallel_tool_calls: bool | None = Field(None, description="Accepted; the parser returns every call it finds.")
    max_tokens: Int | None = Field(None, ge=1, description="Most tokens to generate (default: server setting).")
    max_completion_tokens: Int | None = Field(None, ge=1, description="Same as max_tokens (newer OpenAI name).")
    logprobs: bool | None = Field(False, description="Return the log-probability of each sampled token.")
    top_logprobs: Int | None = Field(None, ge=0, le=20, description="Only 0 is supported (sampled tokens only).")
    response_format: dict[str, Any] | None = Field(None, description="Only {'type': 'text'} is supported.")


# ----------------------------------------------------------------- response


class FunctionCallOut(BaseModel):
    name: str = Field(description="Function name.")
    arguments: str = Field(description="Arguments as a JSON-encoded object.")


class ToolCallOut(BaseModel):
    id: str = Field(description="Call id (answer it with a tool message carrying this tool_call_id).")
    type: Literal["function"] = "function"
    function: FunctionCallOut = Field(description="The call.")


class TokenLogprob(BaseModel):
    token: str = Field(description="The token's text.")
    logprob: float = Field(description="Its log-probability under the sampling distribution.")
    bytes: list[int] | None = Field(None, description="UTF-8 bytes of the token.")
    top_logprobs: list[Any] = Field(default_factory=list, description="Always empty (not supported).")


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = Field(None, description="One entry per generated token.")


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(None, description="The answer's text (tool-call markup removed).")
    tool_calls: list[ToolCallOut] | None = Field(None, description="Tool calls the parser found.")


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason | None = Field(description="stop, length, tool_calls or abort.")
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed answer (`data: {...}`); the stream ends with `data: [DONE]`."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


# ------------------------------------------------------------------ handler


def template_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """OpenAI messages -> the dicts HF chat templates take (tool-call arguments as objects)."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        d: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        if m.name:
            d["name"] = m.name
        if isinstance(m, ToolMessage) and m.tool_call_id:
            d["tool_call_id"] = m.tool_call_id
        if isinstance(m, AssistantMessageIn) and m.tool_calls:
            calls = []
            for j, c in enumerate(m.tool_calls):
                try:
                    args = json.loads(c.function.arguments) if c.function.arguments.strip() else {}
                except json.JSONDecodeError as exc:
                    raise invalid(f"messages[{i}].tool_calls[{j}].function.arguments",
                                  f"arguments is not valid JSON ({exc.msg}); send a JSON object as a string") from None
                if not isinstance(args, dict):
                    raise invalid(f"messages[{i}].tool_calls[{j}].function.arguments",
                                  "arguments must encode a JSON object")
                calls.append({"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": args}})
            d["tool_calls"] = calls
        out.append(d)
    return out


def _check(body: ChatCompletionRequest, engine: ServingEngine, max_tokens: int) -> None:
    body.check_common(engine.settings.limits, max_tokens)
    if body.tool_choice is not None and body.tool_choice not in ("none", "auto"):
        raise invalid("tool_choice", "tool_choice 'required' or a named function is not supported (decoding is not "
                      "constrained); use 'auto' or 'none'", code="unsupported")
    if body.tool_choice not in (None, "none") and not body.tools:
        raise invalid("tool_choice", "tool_choice needs 'tools'")
    if body.logprobs and body.stream:
        raise invalid("logprobs", "logprobs are not available when streaming; drop stream or logprobs",
                      code="unsupported")
    if body.top_logprobs:
        raise invalid("top_logprobs", "top_logprobs is not supported; use logprobs: true for the sampled tokens",
                      code="unsupported")
    fmt = (body.response_format or {}).get("type", "text")
    if fmt != "text":
        raise invalid("response_format", f"response_format {fmt!r} is not supported; only 'text'", code="unsupported")


def _logprobs(engine: ServingEngine, ids: tuple[int, ...], lps: tuple[float, ...]) -> ChoiceLogprobs:
    items = []
    for tid, lp in zip(ids, lps, strict=True):
        tok = engine.tokenizer.decode([tid])
        items.append(TokenLogprob(token=tok, logprob=lp, bytes=list(tok.encode("utf-8"))))
    return ChoiceLogprobs(content=items)


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse, dependencies=[Authorized],
             responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}},
                                                 "description": "JSON, or server-sent events when stream is true."}},
             summary="Create a chat completion")
async def create_chat_completion(body: ChatCompletionRequest, request: Request, engine: EngineDep,
                                 settings: SettingsDep, metrics: MetricsDep) -> Any:
    started = time.perf_counter()
    check_model(body.model, settings.model_name)
    limits = settings.limits
    max_tokens = body.max_completion_tokens or body.max_tokens or min(limits.default_max_tokens, limits.max_tokens)
    _check(body, engine, max_tokens)
    tools = [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None
    prompt_ids = engine.render_chat(template_messages(body.messages), tools)
    engine.check_prompt(prompt_ids, max_tokens, "messages")
    sampling = engine.chat_sampling(body.sampling(max_tokens))
    parser = ToolCallParser(engine.parser) if tools and body.tool_choice != "none" else None
    rid = new_id("chatcmpl")
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = engine.stream([prompt_ids], sampling, body.n, parser, request_id=rid)
        first = await unless_disconnected(request, prefetch(events))
        chunks = _chunks(rid, settings.model_name, body, engine, first, len(prompt_ids), parser, include_usage,
                         metrics, started)
        return EventStreamResponse(event_stream(chunks, metrics),
                                   headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    choices: list[Choice] = await unless_disconnected(request, engine.generate([prompt_ids], sampling, body.n, rid))
    completion_tokens = sum(len(c.token_ids) for c in choices)
    metrics.count_tokens(len(prompt_ids), completion_tokens)
    out = []
    for c in choices:
        content: str | None = c.text
        calls = None
        reason = c.finish_reason
        if parser is not None:
            content, found = parser.parse(c.text)
            if found:
                calls = [ToolCallOut.model_validate(x) for x in openai_tool_calls(found)]
                reason = "tool_calls" if reason == "stop" else reason
        out.append(ChatChoice(index=c.index, message=AssistantMessage(content=content, tool_calls=calls),
                              finish_reason=reason,
                              logprobs=_logprobs(engine, c.token_ids, c.logprobs) if body.logprobs else None))
    usage = Usage(prompt_tokens=len(prompt_ids), completion_tokens=completion_tokens,
                  total_tokens=len(prompt_ids) + completion_tokens)
    return ChatCompletionResponse(id=rid, created=now(), model=settings.model_name, choices=out, usage=usage)


async def _chunks(rid: str, model: str, body: ChatCompletionRequest, engine: ServingEngine, events: Any,
                  prompt_tokens: int, parser: ToolCallParser | None, include_usage: bool,
                  metrics: Any, started: float) -> AsyncIterator[str]:
    created = now()
    first_text = True

    def chunk(index: int, delta: DeltaMessage, finish: str | None = None) -> str:
        return sse(ChatCompletionChunk(id=rid, created=created, model=model, choices=[
            ChunkChoice(index=index, delta=delta, finish_reason=finish)]))

    for i in range(body.n):
        yield chunk(i, DeltaMessage(role="assistant", content=""))
    generated = 0
    try:
        async for ev in events:
            generated += len(ev.token_ids)
            if ev.text:
                if first_text:
                    metrics.ttft.observe(time.perf_counter() - started)
                    first_text = False
                yield chunk(ev.index, DeltaMessage(content=ev.text))
            if ev.finish_reason is None:
                continue
            reason = ev.finish_reason
            if parser is not None and ev.full_text is not None:
                content, found = parser.parse(ev.full_text)
                rest = ev.stream.rest(content or "") if ev.stream is not None else ""
                if rest:
                    yield chunk(ev.index, DeltaMessage(content=rest))
                if found:
                    calls = [dict(x, index=k) for k, x in enumerate(openai_tool_calls(found))]
                    yield chunk(ev.index, DeltaMessage(tool_calls=calls))
                    reason = "tool_calls" if reason == "stop" else reason
            elif ev.stream is not None and ev.full_text is not None:
                rest = ev.stream.rest(ev.full_text)
                if rest:
                    yield chunk(ev.index, DeltaMessage(content=rest))
            yield chunk(ev.index, DeltaMessage(), reason)
    except APIError as exc:
        yield render_error(exc)
        return
    finally:
        metrics.count_tokens(prompt_tokens, generated)
        await events.aclose()
    if include_usage:
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=generated, total_tokens=prompt_tokens + generated)
        yield sse(ChatCompletionChunk(id=rid, created=created, model=model, choices=[], usage=usage))
    yield "data: [DONE]\n\n"

