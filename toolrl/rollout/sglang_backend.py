"""The `sglang` rollout backend: SGLang's offline `sglang.Engine`, token-in/token-out.

    rollout.backend=sglang rollout.backend_args.mem_fraction_static=0.5

- The engine is created with `skip_tokenizer_init=True`: prompts go in as
  `input_ids`, tokens come back as ids with their logprobs
  (`return_logprob=True`, `meta_info["output_token_logprobs"]`). Stop
  strings therefore cannot be checked by SGLang; `rollout.stop` is refused
  with this backend (stop token ids work).
- Logprobs: SGLang's default is log softmax(logits / T), the hf backend's
  definition (docs/rollout.md); leave `SGLANG_RETURN_ORIGINAL_LOGPROB` unset.
  Greedy requests report T = 1, as ours do.
- Concurrency: the Engine's asyncio loop runs on one background thread;
  every request becomes an `engine.async_generate(...)` task there, so SGLang's
  scheduler batches whatever is in flight. Cancelling a request cancels its
  task and aborts it in the engine.
- Weights: `update_weights(state_dict)` calls
  `engine.update_weights_from_tensor(named_tensors=[(name, tensor), ...],
  flush_cache=True)` on the loop thread between requests' steps;
  `sleep()`/`wake()` map to `release_memory_occupation()` /
  `resume_memory_occupation()` when `backend_args.enable_memory_saver=true`.

`rollout.backend_args` go to `sglang.Engine(...)` (e.g. `mem_fraction_static`,
`context_length`, `tp_size`), except `max_queue` (default 4096).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from toolrl.errors import ToolrlError, require
from toolrl.rollout.base import (
    BackendSettings,
    GenerationRequest,
    GenerationResult,
    GenFinishReason,
    QueueFullError,
    SamplingParams,
    StreamChunk,
)
from toolrl.rollout.requests import RequestHandle, StreamCallback, await_handle, stream_handle

logger = logging.getLogger(__name__)

_OUR_KEYS = ("max_queue",)
_CLOSE = object()


# ---------------------------------------------------------------------------------- conversion
def engine_kwargs(settings: BackendSettings) -> dict[str, Any]:
    """Keyword arguments for `sglang.Engine(...)`."""
    extra = {k: v for k, v in dict(settings.extra or {}).items() if k not in _OUR_KEYS}
    kwargs: dict[str, Any] = dict(
        model_path=settings.model_path,
        skip_tokenizer_init=True,
        dtype=settings.dtype,
        random_seed=settings.seed,
        max_running_requests=settings.max_batch_size,
    )
    kwargs.update(extra)
    return kwargs


def sampling_dict(sp: SamplingParams) -> dict[str, Any]:
    """SGLang sampling params for one request (the stop token stays in the output)."""
    if sp.stop:
        raise ToolrlError(
            f"stop strings {list(sp.stop)} are not supported by the sglang backend (it runs without a tokenizer)",
            where="rollout.stop",
            fix="remove rollout.stop (end-of-turn tokens stop generation already), or use rollout.backend=hf or vllm",
        )
    d: dict[str, Any] = dict(
        temperature=float(sp.temperature),
        top_p=float(sp.top_p),
        top_k=int(sp.top_k) if sp.top_k > 0 else -1,
        max_new_tokens=int(sp.max_tokens),
        stop_token_ids=[int(i) for i in sp.stop_token_ids],
        no_stop_trim=True,
        skip_special_tokens=False,
        ignore_eos=bool(sp.ignore_eos),
        min_new_tokens=int(sp.min_tokens),
    )
    if sp.seed is not None:
        d["sampling_seed"] = int(sp.seed) & 0x7FFFFFFF
    return d


def tokens_of(out: Mapping[str, Any]) -> tuple[list[int], list[float]]:
    """Token ids and logprobs from one SGLang output (`output_token_logprobs`: (logprob, id, text) triples)."""
    meta = out.get("meta_info") or {}
    entries = meta.get("output_token_logprobs")
    if entries is None:
        raise ToolrlError("SGLang returned no output_token_logprobs", where="sglang backend",
                          fix="this is a bug in the request conversion: return_logprob=True must be set")
    ids = [int(e[1]) for e in entries]
    lps = [float(e[0]) if e[0] is not None else float("nan") for e in entries]
    out_ids = out.get("output_ids")
    if out_ids is not None and list(out_ids) != ids and list(out_ids) != ids[: len(out_ids)]:
        raise ToolrlError(f"SGLang's output_ids ({len(out_ids)}) disagree with its logprob entries ({len(ids)})",
                          where="sglang backend")
    return ids, lps


def finish_of(out: Mapping[str, Any]) -> GenFinishReason | None:
    """None while the request runs; else stop | length | abort."""
    reason = (out.get("meta_info") or {}).get("finish_reason")
    if reason is None:
        return None
    kind = reason.get("type") if isinstance(reason, Mapping) else str(reason)
    return {"length": "length", "abort": "abort"}.get(kind or "", "stop")  # type: ignore[return-value]


# ---------------------------------------------------------------------------------- backend
class SGLangBackend:
    """SGLang rollout backend (see the module doc)."""

    name = "sglang"

    def __init__(self, settings: BackendSettings, *, engine: Any = None):
        self.settings = settings
        if engine is None:
            sgl = require("sglang", "sglang", "rollout.backend=sglang")
            if settings.module is not None:
                logger.warning("sglang keeps its own copy of the weights: the colocated module is not shared; "
                               "push new weights with update_weights()")
            engine = sgl.Engine(**engine_kwargs(settings))
        self.engine = engine
        self.loop: asyncio.AbstractEventLoop = engine.loop
        extra = dict(settings.extra or {})
        self.max_queue = int(extra.get("max_queue", 4096))
        self._memory_saver = bool(extra.get("enable_memory_saver", False))
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._waiting = 0
        self._tasks: dict[str, asyncio.Task] = {}
        self._jobs: asyncio.Queue = asyncio.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="toolrl-sglang-loop", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ generation
    def submit(self, request: GenerationRequest, on_token: StreamCallback | None = None, *,
               block: bool = True) -> RequestHandle:
        if not request.prompt_ids:
            raise ValueError("a generation request needs at least one prompt token")
        params = sampling_dict(request.sampling)  # refuse bad requests in the caller's thread
        with self._lock:
            if self._closed:
                raise RuntimeError("the sglang backend is closed")
            if not block and self._waiting >= self.max_queue:
                raise QueueFullError(f"the generation queue is full ({self._waiting} requests waiting)",
                                     where="sglang backend", fix="retry later, or raise rollout.backend_args.max_queue")
            self._waiting += 1
        handle = RequestHandle(request, f"{request.request_id or 'req'}-{next(self._ids)}", on_token=on_token)
        handle.on_cancel = lambda: self.loop.call_soon_threadsafe(self._cancel, handle.request_id)
        self.loop.call_soon_threadsafe(self._jobs.put_nowait, (handle, params))
        return handle

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        handles = [self.submit(r) for r in requests]
        return [h.future.result() for h in handles]

    async def agenerate(self, request: GenerationRequest) -> GenerationResult:
        return await await_handle(self.submit(request, block=False))

    def astream(self, request: GenerationRequest) -> AsyncIterator[StreamChunk]:
        return stream_handle(lambda on_token: self.submit(request, on_token=on_token, block=False))

    # ------------------------------------------------------------------ weights and lifecycle
    def update_weights(self, state_dict: Mapping[str, Any]) -> None:
        named = [(k, v.detach() if hasattr(v, "detach") else v) for k, v in state_dict.items()]
        self._control(lambda: self.engine.update_weights_from_tensor(named_tensors=named, flush_cache=True))

    def sleep(self) -> None:
        if self._memory_saver:
            self._control(self.engine.release_memory_occupation)

    def wake(self) -> None:
        if self._memory_saver:
            self._control(self.engine.resume_memory_occupation)

    def stats(self) -> dict[str, float]:
        with self._lock:
            waiting = self._waiting
        return {"queue_depth": float(waiting), "batch_size": float(len(self._tasks)),
                "max_batch_size": float(self.settings.max_batch_size)}

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.loop.call_soon_threadsafe(self._jobs.put_nowait, _CLOSE)
        self._thread.join(timeout=60)
        shutdown = getattr(self.engine, "shutdown", None)
        if shutdown is not None:
            shutdown()

    def _control(self, fn: Callable[[], Any]) -> Any:
        """Run a synchronous engine method on the loop thread (the loop is paused meanwhile, then
        SGLang's method runs it again itself), and wait for it."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(self._jobs.put_nowait, (fn, fut))
        return fut.result()

    # ------------------------------------------------------------------ loop thread
    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        while True:
            job = self.loop.run_until_complete(self._serve())
            if job is _CLOSE:
                break
            fn, fut = job
            try:
                fut.set_result(fn())
            except Exception as exc:
                fut.set_exception(exc)
        for task in list(self._tasks.values()):
            task.cancel()
        if self._tasks:
            self.loop.run_until_complete(asyncio.gather(*self._tasks.values(), return_exceptions=True))

    async def _serve(self) -> Any:
        """Start a task per request; return the first control job (or _CLOSE) to the thread."""
        while True:
            job = await self._jobs.get()
            if job is _CLOSE or not isinstance(job[0], RequestHandle):
                return job
            handle, params = job
            with self._lock:
                self._waiting -= 1
            if handle.cancelled:
                handle.finish("abort")
                continue
            self._tasks[handle.request_id] = asyncio.ensure_future(self._one(handle, params))

    def _cancel(self, request_id: str) -> None:
        task = self._tasks.get(request_id)
        if task is not None:
            task.cancel()

    async def _one(self, handle: RequestHandle, params: dict[str, Any]) -> None:
        rid = handle.request_id
        kwargs = dict(input_ids=list(handle.request.prompt_ids), sampling_params=params, return_logprob=True, rid=rid)
        try:
            if handle.on_token is None:
                out = await self.engine.async_generate(**kwargs)
                ids, lps = tokens_of(out)
                handle.emit(ids, lps, finish_of(out) or "stop")
            else:
                seen = 0
                stream = await self.engine.async_generate(**kwargs, stream=True)
                async for out in stream:
                    ids, lps = tokens_of(out)
                    done = (out.get("meta_info") or {}).get("completion_tokens")
                    if done is not None and len(ids) < int(done):  # incremental chunks
                        new_ids, new_lps = ids, lps
                    else:  # cumulative chunks
                        new_ids, new_lps = ids[seen:], lps[seen:]
                    seen += len(new_ids)
                    finish = finish_of(out)
                    handle.emit(new_ids, new_lps, finish)
                    if finish is not None:
                        break
                handle.finish("stop")  # no-op when a finish reason arrived
        except asyncio.CancelledError:
            self._abort_in_engine(rid)
            handle.finish("abort")
        except Exception as exc:
            handle.fail(exc)
        finally:
            self._tasks.pop(rid, None)

    def _abort_in_engine(self, rid: str) -> None:
        manager = getattr(self.engine, "tokenizer_manager", None)
        abort = getattr(manager, "abort_request", None)
        if abort is not None:
            try:
                abort(rid)
            except Exception:
                logger.exception("sglang abort_request(%s) failed", rid)
