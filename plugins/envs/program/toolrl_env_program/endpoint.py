"""The rollout endpoint: `toolrl serve`'s chat completions in front of the rollout backend, recording.

`ProgramEndpoint` is a FastAPI app on 127.0.0.1 (a free port) that answers
`POST /v1/chat/completions` with the serving package's own handler
(`toolrl_serving.api.chat.create_chat_completion`: the same request and
response schemas, chat template, training tool-call parser and streaming), so
an agent program sees what a client of `toolrl serve` sees. What differs:

* Each episode gets its own Bearer key (`open`); a request is refused with 401
  unless it carries the key of a running episode (`close` ends one).
* The engine behind the handler is `ProgramEngine`: the prompt comes from the
  episode's `EpisodeRecorder` (the recorded segment continued token for token,
  or a fresh rendering: `toolrl.rollout.program_record`), and sampling follows
  the rollout settings (temperature, top-p, top-k, seeds, token budgets), not
  the program's, since training needs samples from the policy it updates.
* `RecordingBackend` hands every result (ids and logprobs as the backend
  sampled them, streamed or not) to the call in flight; the reply the program
  received (content and tool calls, from the response or the streamed events)
  completes the call in the recorder.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import hashlib
import json
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from toolrl.chat.parsers import get_parser
from toolrl.chat.template import TemplateError
from toolrl.rollout.agent_loop import derive_seed
from toolrl.rollout.base import GenerationRequest, GenerationResult, QueueFullError, SamplingParams, StreamChunk
from toolrl.rollout.program_loop import EpisodeJob, RolloutServices
from toolrl.rollout.program_record import CallTicket, EpisodeClosedError, EpisodeRecorder, TokenBudgetError
from toolrl.types import ToolCall

from toolrl_serving.api import chat
from toolrl_serving.engine import ServingEngine
from toolrl_serving.errors import ERROR_RESPONSES, APIError, install_handlers, invalid
from toolrl_serving.limits import ClientDisconnected
from toolrl_serving.metrics import ServerMetrics
from toolrl_serving.settings import Limits, ServerSettings

logger = logging.getLogger(__name__)

KEY_PREFIX = "sk-toolrl-episode-"


# ------------------------------------------------------------------ episodes and calls


@dataclass(eq=False)
class EpisodeSession:
    """One running episode as the endpoint sees it."""

    job: EpisodeJob
    key: str = field(repr=False)
    recorder: EpisodeRecorder
    closed: bool = False
    calls: int = 0
    backend_errors: list[str] = field(default_factory=list)


@dataclass(eq=False)
class Call:
    """One request in flight: its ticket in the recorder and what the backend sampled for it."""

    session: EpisodeSession
    ticket: CallTicket | None = None
    result: GenerationResult | None = None
    started: float = field(default_factory=time.perf_counter)
    done: bool = False

    def abort(self) -> None:
        if not self.done and self.ticket is not None:
            self.session.recorder.abort(self.ticket)
        self.done = True

    def finish(self, content: str | None, tool_calls: Sequence[Mapping[str, Any]], parser: Any) -> None:
        """The program received `content` and `tool_calls` (OpenAI shape): record the call."""
        if self.done or self.ticket is None:
            return
        if self.result is None:  # nothing was sampled (cannot happen for a 200 answer): keep nothing
            self.abort()
            return
        self.done = True
        calls, reply_calls = [], []
        for c in tool_calls:
            fn = c["function"]
            args = json.loads(fn["arguments"]) if fn["arguments"].strip() else {}
            calls.append(ToolCall(name=fn["name"], arguments=args, id=c["id"], raw=fn["arguments"]))
            reply_calls.append({"id": c["id"], "type": "function", "function": {"name": fn["name"], "arguments": args}})
        # the reply as the program sends it back (normalised like toolrl_serving's template_messages)
        reply: dict[str, Any] = {"role": "assistant", "content": content or ""}
        if reply_calls:
            reply["tool_calls"] = reply_calls
        malformed = 0
        if parser is not None:
            malformed = len(getattr(parser.parse(_text(self.session.recorder, self.result)), "malformed", ()))
        r = self.result
        self.session.recorder.finish(self.ticket, r.token_ids, r.logprobs, r.finish_reason, reply, calls, malformed,
                                     time.perf_counter() - self.started)


def _text(recorder: EpisodeRecorder, result: GenerationResult) -> str:
    ids = list(result.token_ids)
    if ids and ids[-1] in recorder.chat.info.end_of_turn_ids:
        ids = ids[:-1]
    return recorder.tokenizer.decode(ids, skip_special_tokens=False)


_CALL: contextvars.ContextVar[Call | None] = contextvars.ContextVar("toolrl_program_call", default=None)


def current_call() -> Call:
    call = _CALL.get()
    if call is None:  # only the endpoint's own route calls the engine
        raise RuntimeError("no agent-program call in this context")
    return call


# ------------------------------------------------------------------ backend and engine


class RecordingBackend:
    """The rollout backend, handing each result to the call in flight; waits (never fails) while its queue is full."""

    name = "recording"

    def __init__(self, backend: Any):
        self.backend = backend

    async def agenerate(self, request: GenerationRequest) -> GenerationResult:
        call = _CALL.get()
        delay = 0.01
        while True:
            try:
                result = await self.backend.agenerate(request)
                break
            except QueueFullError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            except Exception as exc:
                if call is not None:
                    call.session.backend_errors.append(f"{type(exc).__name__}: {exc}")
                raise
        if call is not None:
            call.result = result
        return result

    async def astream(self, request: GenerationRequest) -> AsyncIterator[StreamChunk]:
        call = _CALL.get()
        ids: list[int] = []
        lps: list[float] = []
        finish = None
        stream: Any = None
        delay = 0.01
        try:
            while True:  # a full queue: wait and submit again
                stream = self.backend.astream(request)
                try:
                    chunk = await stream.__anext__()
                    break
                except QueueFullError:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.5)
            while True:
                ids += chunk.token_ids
                lps += chunk.logprobs
                finish = chunk.finish_reason
                yield chunk
                if finish is not None:
                    return
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    return
        except Exception as exc:
            if call is not None:
                call.session.backend_errors.append(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if stream is not None:
                await stream.aclose()  # ending early aborts the request in the backend
            if call is not None:  # what the consumer was given (the stream may end early at a stop string)
                call.result = GenerationResult(tuple(ids), tuple(lps), finish or "abort", request.request_id,
                                               len(request.prompt_ids))

    def stats(self) -> Mapping[str, float]:
        fn = getattr(self.backend, "stats", None)
        return fn() if fn is not None else {}

    def close(self) -> None:  # the run owns the backend
        pass


class ProgramEngine:
    """What the serving chat handler talks to: a `ServingEngine` on the recording backend, with the
    prompt taken from the episode's recorder and sampling taken from the rollout settings."""

    def __init__(self, services: RolloutServices, settings: ServerSettings):
        self.services = services
        self.loop_settings = services.settings
        self.inner = ServingEngine(backend=RecordingBackend(services.backend), tokenizer=services.tokenizer,
                                   parser=get_parser(services.settings.tool_parser), settings=settings)
        self.settings = settings
        self.tokenizer = services.tokenizer
        self.parser = self.inner.parser

    def render_chat(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None) -> list[int]:
        call = current_call()
        try:
            call.ticket = call.session.recorder.begin(messages, tools)
        except EpisodeClosedError as exc:
            raise APIError(401, exc.what, type="authentication_error", code="episode_ended",
                           headers={"WWW-Authenticate": "Bearer"}) from None
        except TokenBudgetError as exc:
            raise APIError(400, f"{exc.what}; {exc.fix}", param="messages", code="context_length_exceeded") from None
        except TemplateError as exc:
            raise invalid("messages", f"the model's chat template cannot render these messages: {exc.what}",
                          code="invalid_messages") from None
        return list(call.ticket.prompt_ids)

    def check_prompt(self, prompt_ids: Sequence[int], max_tokens: int, param: str) -> None:
        self.inner.check_prompt(prompt_ids, max_tokens, param)

    def chat_sampling(self, sampling: SamplingParams) -> SamplingParams:
        call = current_call()
        s, job, ticket = self.loop_settings, call.session.job, call.ticket
        assert ticket is not None
        max_tokens = min(sampling.max_tokens, s.max_new_tokens, ticket.max_new_tokens)
        seed = derive_seed(s.seed, self.services.step, job.task.id, job.sample_index, ticket.number)
        ours = dataclasses.replace(sampling, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                                   max_tokens=max_tokens, seed=seed, stop=tuple(dict.fromkeys([*sampling.stop, *s.stop])))
        return self.inner.chat_sampling(ours)

    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        return await self.inner.generate(*args, **kwargs)

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.stream(*args, **kwargs)

    def stats(self) -> Any:
        return self.inner.stats()

    def close(self) -> None:
        pass


# ------------------------------------------------------------------ the app


_bearer = HTTPBearer(auto_error=False, description="The episode's key (the client toolrl gives the program has it).")


def _unauthorized(message: str, code: str) -> APIError:
    return APIError(401, message, type="authentication_error", code=code, headers={"WWW-Authenticate": "Bearer"})


def episode_session(request: Request,
                    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> EpisodeSession:
    """The running episode whose key the request carries; 401 for none, a foreign key or an ended episode."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise _unauthorized("missing API key: use the client toolrl passes to the program", "missing_api_key")
    digest = hashlib.sha256(credentials.credentials.encode("utf-8", "surrogatepass")).digest()
    session = request.app.state.sessions.get(digest)
    if session is None:
        raise _unauthorized("incorrect API key provided: this endpoint accepts only the keys of running episodes",
                            "invalid_api_key")
    if session.closed:
        raise _unauthorized("this episode has ended; its key is no longer accepted", "episode_ended")
    return session


SessionDep = Annotated[EpisodeSession, Depends(episode_session)]
router = APIRouter(tags=["openai"])


@router.post("/v1/chat/completions", response_model=chat.ChatCompletionResponse,
             responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}},
                                                 "description": "JSON, or server-sent events when stream is true."}},
             summary="Create a chat completion (recorded for training)")
async def create_chat_completion(body: chat.ChatCompletionRequest, request: Request, session: SessionDep) -> Any:
    state = request.app.state
    session.calls += 1
    call = Call(session)
    token = _CALL.set(call)
    try:
        response = await chat.create_chat_completion(body, request, state.engine, state.settings, state.metrics)
    except BaseException:
        call.abort()
        raise
    finally:
        _CALL.reset(token)
    parser = state.engine.parser if body.tools and body.tool_choice != "none" else None
    if isinstance(response, chat.ChatCompletionResponse):
        msg = response.choices[0].message
        call.finish(msg.content, [c.model_dump() for c in msg.tool_calls or ()], parser)
        return response
    response.body_iterator = _watch(call, response.body_iterator, parser)
    return response


async def _watch(call: Call, events: AsyncIterator[str], parser: Any) -> AsyncIterator[str]:
    """Pass the server-sent events on and rebuild the reply from them; record it when the stream ends."""
    content: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    complete = False
    try:
        async for event in events:
            yield event
            for line in event.splitlines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: "):]
                if data == "[DONE]":
                    complete = True
                    continue
                payload = json.loads(data)
                if "error" in payload:
                    complete = False
                    break
                for choice in payload.get("choices", ()):
                    delta = choice.get("delta") or {}
                    content.append(delta.get("content") or "")
                    tool_calls.extend(delta.get("tool_calls") or ())
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
        if complete:
            calls = [{k: v for k, v in c.items() if k != "index"} for c in tool_calls]
            text = "".join(content)
            call.finish(text if text or not calls else None, calls, parser)
        else:
            call.abort()


class ProgramEndpoint:
    """The endpoint of one `run_episodes` call: start, open/close episodes, stop."""

    def __init__(self, services: RolloutServices, *, model_name: str = "policy"):
        s = services.settings
        # the program may ask for any max_tokens: the engine clamps to the rollout's budgets instead of refusing
        limits = Limits(max_prompt_tokens=1 << 30, max_tokens=1 << 30, default_max_tokens=s.max_new_tokens, max_n=1,
                        max_body_bytes=64 << 20)
        self.settings = ServerSettings(model=model_name, served_model_name=model_name, tool_parser=s.tool_parser,
                                       limits=limits)
        self.services = services
        self.sessions: dict[bytes, EpisodeSession] = {}
        self.app = self._app()
        self._server: Any = None
        self._task: asyncio.Task | None = None
        self.base_url = ""

    def _app(self) -> FastAPI:
        app = FastAPI(title="toolrl rollout endpoint", description="OpenAI-compatible chat completions for agent "
                      "programs during rollout; every call is recorded as token ids for training.")
        engine = ProgramEngine(self.services, self.settings)
        app.state.settings = self.settings
        app.state.engine = engine
        app.state.metrics = ServerMetrics(engine.stats)
        app.state.sessions = self.sessions
        install_handlers(app)

        async def _disconnected(request: Request, exc: ClientDisconnected) -> Any:
            from fastapi import Response

            return Response(status_code=499)

        app.add_exception_handler(ClientDisconnected, _disconnected)  # type: ignore[arg-type]
        app.include_router(router)
        return app

    async def start(self) -> str:
        """Serve on 127.0.0.1 (a free port); returns the base URL for OpenAI clients (`.../v1`)."""
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False,
                                timeout_graceful_shutdown=2, ws="none")
        self._server = uvicorn.Server(config)
        self._task = asyncio.ensure_future(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start
                raise RuntimeError("the rollout endpoint stopped while starting")
            await asyncio.sleep(0.005)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.gather(self._task, return_exceptions=True)
        for session in self.sessions.values():
            session.closed = True

    def open(self, job: EpisodeJob) -> EpisodeSession:
        """A new episode with its own key (accepted until `close`)."""
        s = self.services.settings
        key = KEY_PREFIX + secrets.token_urlsafe(24)
        session = EpisodeSession(job, key, EpisodeRecorder(self.services.tokenizer, max_total_tokens=s.max_total_tokens))
        self.sessions[hashlib.sha256(key.encode()).digest()] = session
        return session

    def close(self, session: EpisodeSession) -> None:
        """End the episode: its key gets 401 from now on; results of calls still in flight are ignored."""
        session.closed = True
        session.recorder.close()
