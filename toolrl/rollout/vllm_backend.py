"""The `vllm` rollout backend: vLLM's offline `LLM`, driven token-in/token-out.

    rollout.backend=vllm rollout.backend_args.gpu_memory_utilization=0.5

One background thread owns the `vllm.LLM` and runs its engine loop
(`llm.llm_engine.add_request / step / abort_request`): requests that arrive
while others run join the running batch at the next step (vLLM's own
continuous batching), and weight updates run between two steps. A streamed
request (`astream`, serving) gets `RequestOutputKind.DELTA` outputs every
step; every other request (`generate`, `agenerate`: the trainer's rollouts)
is `FINAL_ONLY`, as in `LLM.generate`: vLLM builds no per-step output object
for it, so the stepping thread does no per-token Python work.

- Prompts go in as `TokensPrompt(prompt_token_ids=...)` rendered by vLLM's
  `llm.renderer.render_cmpl(...)` (the supported input path of vLLM 0.25;
  raw prompts passed to `add_request` are deprecated there); nothing is
  tokenized or detokenized on our side (vLLM detokenizes only to check stop
  strings).
- Logprobs: `SamplingParams(logprobs=0, flat_logprobs=True)` returns the
  sampled token's logprob in vLLM's flat container (no dict per token);
  the engine is created with `logprobs_mode="processed_logprobs"`, i.e.
  log softmax(logits / T), the hf backend's definition (docs/rollout.md). With
  top_k/top_p active vLLM renormalises over the kept tokens; RL runs keep
  them off (top_p=1, top_k=0).
- Weights: `update_weights(state_dict)` calls
  `llm.collective_rpc(load_weights_on_worker, args=(named_tensors,))`, where
  the function runs `worker.model_runner.model.load_weights(...)` in each
  worker, then resets the prefix cache (cached KV belongs to the old
  weights). The engine runs in-process for this:
  `VLLM_ENABLE_V1_MULTIPROCESSING=0` is set before vLLM is imported.
- `sleep()` / `wake()` map to `llm.sleep(level=1)` / `llm.wake_up()` when the
  engine was created with `backend_args.enable_sleep_mode=true`
  (`backend_args.sleep_level=2` drops the weights instead of keeping a CPU
  copy: for trainers that push new weights after every wake).

- `backend_args.engine_process=true` runs vLLM's engine core in a process of
  its own on the same GPU (vLLM's V1 multiprocessing) instead of in the
  trainer's: the engine's scheduler and the trainer's update then do not share
  one Python interpreter lock, which matters when both run at once
  (`trainer.async_rollouts`). Weights then go in through CUDA IPC: the trainer
  packs them into flat buffers (at most `weight_bucket_mb`, default 1024, each)
  and the engine reads them in place (`toolrl.rollout.vllm_weights`).

- An in-process engine on CUDA runs on a CUDA stream of its own
  (`backend_args.engine_stream`, default true): vLLM's kernels are launched
  from the engine thread, whose current stream that is, so with
  `trainer.async_rollouts` the rollout's kernels can run beside the update's
  (on the trainer thread's stream) instead of queueing behind them. The stream
  is never the maker's, and the model runner's cached main stream is bound to
  it (`bind_runner_stream`: vLLM's V2 runner would otherwise move the engine
  thread onto the maker's stream after its first step). A weight load waits
  for the caller's stream before it reads, and finishes before it returns.
  `backend_args.engine_stream_priority` ("normal", default, or "high") sets
  that stream's CUDA priority: "high" lets the GPU schedule the rollout's small
  decode kernels ahead of the update's large ones when both are queued.
  Such an engine also gates CUDA graph recordings (`toolrl.rollout.capture_gate`):
  a `torch.cuda.graph` recording on another thread (the update's graph-replayed
  layers, `trainer.compile_mode=reduce-overhead`) waits until the engine thread is
  between two steps, and the engine waits until the recording ends.

- `backend_args.kv_cache="fit"` reserves a KV cache for `max_batch_size`
  sequences of `max_model_len` tokens (vLLM's `kv_cache_memory_bytes`, from the
  model's config.json; `toolrl.rollout.vllm_kv`) instead of the
  `gpu_memory_utilization` share of the card ("share", the default).

`rollout.backend_args` are passed to `vllm.LLM(...)` (e.g.
`gpu_memory_utilization`, `max_model_len`, `enforce_eager`,
`tensor_parallel_size`), except `max_queue` (requests that may wait, default 4096),
`sleep_level`, `engine_process`, `weight_bucket_mb`, `engine_stream`,
`engine_stream_priority` and `kv_cache`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import itertools
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
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
from toolrl.rollout.capture_gate import GATE, install_graph_hook
from toolrl.rollout.requests import RequestHandle, StreamCallback, await_handle, stream_handle
from toolrl.rollout.vllm_engine import engine_in_own_process, free_inprocess_engine
from toolrl.rollout.vllm_kv import kv_cache_kwargs
from toolrl.rollout.vllm_weights import RECEIVER_CLS, RECEIVER_METHOD, pack_buckets, share_payload

logger = logging.getLogger(__name__)

_OUR_KEYS = ("max_queue", "sleep_level", "engine_process", "weight_bucket_mb", "engine_stream",
             "engine_stream_priority", "kv_cache")
_STREAM_PRIORITIES = {"normal": 0, "high": -1}  # torch.cuda.Stream(priority=...): lower is higher


# ---------------------------------------------------------------------------------- conversion
def llm_kwargs(settings: BackendSettings) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM(...)` (our own keys are checked here, before the engine loads)."""
    stream_priority(dict(settings.extra or {}).get("engine_stream_priority", "normal"))
    extra = {k: v for k, v in dict(settings.extra or {}).items() if k not in _OUR_KEYS}
    kwargs: dict[str, Any] = dict(
        model=settings.model_path,
        dtype=settings.dtype,
        seed=settings.seed,
        max_num_seqs=settings.max_batch_size,
        logprobs_mode="processed_logprobs",
        enable_prefix_caching=True,
    )
    if dict(settings.extra or {}).get("engine_process"):
        if extra.get("worker_extension_cls") not in (None, RECEIVER_CLS):
            raise ToolrlError("rollout.backend_args.engine_process=true sets vLLM's worker_extension_cls itself, "
                              f"but backend_args.worker_extension_cls={extra['worker_extension_cls']!r} is set",
                              where="rollout.backend_args",
                              fix="drop worker_extension_cls, or engine_process (weights then load in-process)")
        kwargs["worker_extension_cls"] = RECEIVER_CLS
    kwargs.update(extra)
    kwargs.update(kv_cache_kwargs(dict(settings.extra or {}).get("kv_cache", "share"), kwargs))
    return kwargs


def sampling_kwargs(sp: SamplingParams) -> dict[str, Any]:
    """Keyword arguments for `vllm.SamplingParams` (one sample, the sampled token's logprob)."""
    kw: dict[str, Any] = dict(
        n=1,
        temperature=float(sp.temperature),
        top_p=float(sp.top_p),
        top_k=int(sp.top_k) if sp.top_k > 0 else 0,
        max_tokens=int(sp.max_tokens),
        stop_token_ids=[int(i) for i in sp.stop_token_ids],
        seed=sp.seed,
        logprobs=0,
        flat_logprobs=True,
        skip_special_tokens=False,
        detokenize=bool(sp.stop),  # only stop strings need text
        ignore_eos=bool(sp.ignore_eos),
        min_tokens=int(sp.min_tokens),
    )
    if sp.stop:
        kw.update(stop=list(sp.stop), include_stop_str_in_output=True)
    return kw


def delta_of(completion: Any) -> tuple[list[int], list[float]]:
    """Token ids and their logprobs from a `CompletionOutput` (the new ones for DELTA outputs, all for FINAL_ONLY)."""
    ids = list(completion.token_ids)
    entries = completion.logprobs
    if entries is None:
        raise ToolrlError("vLLM returned no logprobs", where="vllm backend",
                          fix="this is a bug in the request conversion: logprobs=0 must be set")
    starts = getattr(entries, "start_indices", None)
    if starts is not None:  # FlatLogprobs: position i's entries start at start_indices[i], the sampled token first
        flat_ids, flat_lps = entries.token_ids, entries.logprobs
        n = len(ids)
        if len(flat_ids) == n == len(starts) and list(starts) == list(range(n)):
            # logprobs=0 (the trainer's requests): one entry per position, the sampled token's; compared and copied
            # as whole lists (this runs on the engine thread, for every finished request's every token)
            if list(flat_ids) != ids:
                raise ToolrlError(f"vLLM's flat logprobs do not match its {n} tokens", where="vllm backend")
            return ids, list(flat_lps)
        if len(starts) != n or any(flat_ids[k] != t for k, t in zip(starts, ids)):
            raise ToolrlError(f"vLLM's flat logprobs ({len(starts)} positions) do not match its {n} tokens",
                              where="vllm backend")
        return ids, [flat_lps[k] for k in starts]
    lps: list[float] = []
    for tok, entry in zip(ids, entries):
        lp = entry[tok] if not hasattr(entry, "get") else entry.get(tok)
        if lp is None:
            raise ToolrlError(f"vLLM returned no logprob for the sampled token {tok}", where="vllm backend")
        lps.append(float(getattr(lp, "logprob", lp)))
    if len(lps) != len(ids):
        raise ToolrlError(f"vLLM returned {len(lps)} logprobs for {len(ids)} tokens", where="vllm backend")
    return ids, lps


def finish_of(reason: str | None) -> GenFinishReason:
    return {"stop": "stop", "length": "length", "abort": "abort"}.get(reason or "", "stop")  # type: ignore[return-value]


def load_weights_on_worker(worker: Any, named_tensors: Sequence[tuple[str, Any]]) -> int:
    """Runs inside each vLLM worker (through `collective_rpc`): load HF-named weights."""
    worker.model_runner.model.load_weights(weights=list(named_tensors))
    return len(named_tensors)


def bind_runner_stream(worker: Any, stream: Any) -> str:
    """Runs in an in-process vLLM worker (through `collective_rpc`, on the engine thread): make the model
    runner's main stream the engine thread's stream. Returns what was there ("" when nothing to bind).

    vLLM 0.25's V2 model runner caches `main_stream` (the current stream when first read, at the warm-up that
    runs in the thread that built the engine: the trainer's), and after every step it sets the stepping
    thread's current stream back to it (`async_utils.stream(copy_stream, main_stream)`). Unbound, the engine
    thread moves onto the trainer's stream at its first step, and a rollout's kernels queue behind the
    overlapped update's (the GPU runs the two phases one after the other).
    """
    runner = getattr(worker, "model_runner", None)
    if runner is None or not isinstance(getattr(type(runner), "main_stream", None), functools.cached_property):
        return ""  # the V1 runner reads the current stream at every step
    before = runner.__dict__.get("main_stream")
    runner.__dict__["main_stream"] = stream  # a cached_property reads the instance's dict first
    return f"{getattr(before, 'cuda_stream', 0):#x}"


@dataclass(frozen=True)
class VLLMTypes:
    """The vLLM classes the backend builds requests with (injectable for unit tests)."""

    SamplingParams: Callable[..., Any]
    TokensPrompt: Callable[..., Any]
    delta_kind: Any
    final_kind: Any = None  # None: every request streams DELTA outputs

    @classmethod
    def load(cls) -> VLLMTypes:
        vllm = require("vllm", "vllm", "rollout.backend=vllm")
        from vllm.inputs import TokensPrompt  # type: ignore[import-not-found]
        from vllm.sampling_params import RequestOutputKind  # type: ignore[import-not-found]

        return cls(vllm.SamplingParams, TokensPrompt, RequestOutputKind.DELTA, RequestOutputKind.FINAL_ONLY)


_MP_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"


def stream_priority(value: Any) -> int:
    """`backend_args.engine_stream_priority` as torch's stream priority (0 normal, -1 high)."""
    key = str(value).lower()
    if key not in _STREAM_PRIORITIES:
        raise ToolrlError(f"unknown engine stream priority {value!r}",
                          where="rollout.backend_args.engine_stream_priority",
                          fix=f"use one of {sorted(_STREAM_PRIORITIES)}")
    return _STREAM_PRIORITIES[key]


def _engine_stream(llm: Any, priority: int = 0) -> Any:
    """A CUDA stream for an in-process engine's thread (None: no CUDA, or the engine runs elsewhere)."""
    if engine_in_own_process(llm):
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    # PyTorch hands out streams round-robin from a pool of 32 per priority: never the caller's own (the
    # trainer's, after vLLM set it), or the engine's kernels would queue behind the update's; the pool's next
    # stream is another one
    stream = torch.cuda.Stream(device=torch.cuda.current_device(), priority=priority)
    if stream.cuda_stream == torch.cuda.current_stream().cuda_stream:
        stream = torch.cuda.Stream(device=torch.cuda.current_device(), priority=priority)
    return stream


def _current_stream() -> Any:
    import torch

    return torch.cuda.current_stream()


def _make_llm(settings: BackendSettings, engine_process: bool) -> Any:
    """`vllm.LLM(...)`, its engine core in this process unless `engine_process` (see the module doc)."""
    vllm = require("vllm", "vllm", "rollout.backend=vllm")
    if settings.module is not None:
        logger.warning("vllm keeps its own copy of the weights: the colocated module is not shared; "
                       "push new weights with update_weights()")
    if not engine_process:
        os.environ.setdefault(_MP_ENV, "0")
        return vllm.LLM(**llm_kwargs(settings))
    import vllm.envs as vllm_envs  # type: ignore[import-not-found]

    if hasattr(vllm_envs, "disable_envs_cache"):  # an earlier in-process engine froze the environment
        vllm_envs.disable_envs_cache()
    before = os.environ.get(_MP_ENV)
    os.environ[_MP_ENV] = "1"
    try:
        return vllm.LLM(**llm_kwargs(settings))
    finally:  # later engines of this process choose for themselves
        if before is None:
            os.environ.pop(_MP_ENV, None)
        else:
            os.environ[_MP_ENV] = before


# ---------------------------------------------------------------------------------- backend
class VLLMBackend:
    """vLLM rollout backend (see the module doc)."""

    name = "vllm"

    def __init__(self, settings: BackendSettings, *, llm: Any = None, types: VLLMTypes | None = None):
        self.settings = settings
        extra = dict(settings.extra or {})
        want_process = bool(extra.get("engine_process", False))
        if llm is None:
            llm = _make_llm(settings, want_process)
        self.llm = llm
        self.types = types or VLLMTypes.load()
        # weights through CUDA IPC into an engine process (see vllm_weights); in-process engines get the tensors
        own_process = engine_in_own_process(llm)
        self.shares_weights = want_process and own_process
        if own_process and not want_process:
            raise ToolrlError("vLLM made its engine core in another process (VLLM_ENABLE_V1_MULTIPROCESSING=1 in "
                              "the environment?), where the in-process weight loader cannot reach",
                              where="vllm backend",
                              fix="set rollout.backend_args.engine_process=true (weights then go through CUDA IPC), "
                                  "or unset VLLM_ENABLE_V1_MULTIPROCESSING")
        if want_process and not self.shares_weights:
            logger.warning("rollout.backend_args.engine_process=true, but vLLM made its engine in this process "
                           "(VLLM_ENABLE_V1_MULTIPROCESSING was read before: an earlier engine in this process?); "
                           "weights load in-process")
        self._bucket_bytes = int(float(extra.get("weight_bucket_mb", 1024)) * (1 << 20))
        self.max_queue = int(extra.get("max_queue", 4096))
        self._sleep_mode = bool(extra.get("enable_sleep_mode", False))
        # level 1 keeps a CPU copy of the weights; level 2 drops them (right when new weights follow the wake)
        self._sleep_level = int(extra.get("sleep_level", 1))
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._waiting: collections.deque[RequestHandle] = collections.deque()
        self._controls: collections.deque[tuple[Callable[[], Any], concurrent.futures.Future]] = collections.deque()
        self._active: dict[str, RequestHandle] = {}
        self._closed = False
        self._steps = 0  # engine steps run (stats()["engine_steps"])
        # an in-process engine on CUDA launches its kernels on a stream of its own (see the module doc)
        priority = stream_priority(extra.get("engine_stream_priority", "normal"))
        self._stream = _engine_stream(llm, priority) if bool(extra.get("engine_stream", True)) else None
        self._maker_stream = _current_stream().cuda_stream if self._stream is not None else 0  # for the log
        if self._stream is not None:  # another thread's CUDA graph recordings wait for this one's step to end
            install_graph_hook()
        self._thread = threading.Thread(target=self._run, name="toolrl-vllm-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ generation
    def submit(self, request: GenerationRequest, on_token: StreamCallback | None = None, *,
               block: bool = True) -> RequestHandle:
        if not request.prompt_ids:
            raise ValueError("a generation request needs at least one prompt token")
        handle = RequestHandle(request, f"{request.request_id or 'req'}-{next(self._ids)}", on_token=on_token)
        with self._cond:
            if self._closed:
                raise RuntimeError("the vllm backend is closed")
            if not block and len(self._waiting) >= self.max_queue:
                raise QueueFullError(f"the generation queue is full ({len(self._waiting)} requests waiting)",
                                     where="vllm backend", fix="retry later, or raise rollout.backend_args.max_queue")
            self._waiting.append(handle)
            self._cond.notify_all()
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
        """Load new weights into every vLLM worker, then drop the prefix cache."""
        if self.shares_weights:
            self._control(lambda: self._load_shared(state_dict))
            return
        named = [(k, v.detach() if hasattr(v, "detach") else v) for k, v in state_dict.items()]
        source = _current_stream() if self._stream is not None else None  # where the caller made the tensors

        def load() -> None:
            if source is not None:
                self._stream.wait_stream(source)  # the caller's writes land before the engine's copies read
            self.llm.collective_rpc(load_weights_on_worker, args=(named,))
            self.llm.reset_prefix_cache()
            if self._stream is not None:
                self._stream.synchronize()  # the copies are done before the caller changes its tensors again

        self._control(load)

    def _load_shared(self, state_dict: Mapping[str, Any]) -> None:
        """Weights into an engine process through flat shared buffers, one bucket at a time."""
        import torch

        cuda = torch.cuda.is_available()
        device = torch.device("cuda", torch.cuda.current_device()) if cuda else None
        for flat, entries in pack_buckets(state_dict, device=device, bucket_bytes=self._bucket_bytes):
            if flat.is_cuda:
                torch.cuda.synchronize(flat.device)  # the packing copies are done before the engine reads
            counts = self.llm.collective_rpc(RECEIVER_METHOD, args=(share_payload(flat, entries),))
            if any(c != len(entries) for c in counts):
                raise ToolrlError(f"a vLLM worker loaded {counts} of {len(entries)} weights", where="vllm backend")
            del flat
        if cuda:
            torch.cuda.ipc_collect()
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        if self._sleep_mode:
            self._control(lambda: self.llm.sleep(level=self._sleep_level))

    def wake(self) -> None:
        if self._sleep_mode:
            self._control(self.llm.wake_up)

    def stats(self) -> dict[str, float]:
        with self._cond:
            return {"queue_depth": float(len(self._waiting)), "batch_size": float(len(self._active)),
                    "max_batch_size": float(self.settings.max_batch_size), "engine_steps": float(self._steps)}

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=60)
        if engine_in_own_process(self.llm):  # stop the engine process now (its GPU memory with it)
            try:
                self.llm.llm_engine.engine_core.shutdown()
            except Exception:
                logger.exception("stopping the vLLM engine process failed")
        elif self._thread.is_alive():
            logger.warning("vllm engine thread still busy 60 s after close; its GPU memory is not freed")
        else:
            try:
                free_inprocess_engine(self.llm)
            except Exception:
                logger.exception("freeing the in-process vLLM engine's GPU memory failed")

    def _control(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the engine thread between two steps and wait for it."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            self._controls.append((fn, fut))
            self._cond.notify_all()
        return fut.result()

    # ------------------------------------------------------------------ engine thread
    def _run(self) -> None:
        if self._stream is None:
            self._loop()
            return
        import torch

        with torch.cuda.stream(self._stream):  # this thread's current stream: vLLM launches on it
            try:
                bound = self.llm.collective_rpc(bind_runner_stream, args=(self._stream,))
            except Exception:  # an engine without this runner API: it keeps its own stream handling
                logger.warning("vllm engine: could not bind the model runner to the engine's stream; with "
                               "trainer.async_rollouts its kernels may queue behind the update's", exc_info=True)
                bound = ["?"]
            logger.info("vllm engine thread: launches on CUDA stream %#x (priority %d); the thread that made the "
                        "engine is on %#x; the model runner's main stream was %s", self._stream.cuda_stream,
                        self._stream.priority, self._maker_stream, ", ".join(b or "per step" for b in bound))
            self._loop()

    def _loop(self) -> None:
        engine = self.llm.llm_engine
        while True:
            with self._cond:
                while not (self._closed or self._waiting or self._active or self._controls):
                    self._cond.wait()
                if self._closed:
                    break
                controls, self._controls = list(self._controls), collections.deque()
                new, self._waiting = list(self._waiting), collections.deque()
            with GATE.step():  # no CUDA graph recording of another thread runs meanwhile (capture_gate)
                self._controls_and_step(engine, controls, new)
        for h in [*self._waiting, *self._active.values()]:
            h.fail(RuntimeError("the vllm backend was closed"))

    def _controls_and_step(self, engine: Any, controls: list[tuple[Callable[[], Any], concurrent.futures.Future]],
                           new: list[RequestHandle]) -> None:
        for fn, fut in controls:
            try:
                fut.set_result(fn())
            except Exception as exc:
                fut.set_exception(exc)
        try:
            self._step(engine, new)
        except Exception as exc:
            logger.exception("vllm engine step failed; failing %d request(s)", len(self._active))
            for rid, h in list(self._active.items()):
                h.fail(exc)
            self._safe_abort(engine, list(self._active))
            self._active.clear()

    def _render(self, handles: list[RequestHandle]) -> list[Any]:
        """Engine inputs for the handles' prompts through vLLM's renderer (one call for all of them).

        An entry is an exception when that prompt cannot be rendered (the others still go in).
        """
        prompts = [self.types.TokensPrompt(prompt_token_ids=list(h.request.prompt_ids)) for h in handles]
        renderer = getattr(self.llm, "renderer", None)
        if renderer is None:  # an engine without the renderer API (older vLLM, unit-test fakes)
            return prompts
        try:
            return list(renderer.render_cmpl(prompts))
        except Exception:
            out: list[Any] = []
            for p in prompts:  # find the bad one(s)
                try:
                    out.append(renderer.render_cmpl([p])[0])
                except Exception as exc:
                    out.append(exc)
            return out

    def _step(self, engine: Any, new: list[RequestHandle]) -> None:
        live = []
        for h in new:
            if h.cancelled:
                h.finish("abort")
            else:
                live.append(h)
        for h, prompt in zip(live, self._render(live) if live else []):
            streamed = h.on_token is not None or self.types.final_kind is None
            kind = self.types.delta_kind if streamed else self.types.final_kind
            try:
                if isinstance(prompt, Exception):
                    raise prompt
                params = self.types.SamplingParams(**sampling_kwargs(h.request.sampling), output_kind=kind)
                engine.add_request(h.request_id, prompt, params)
            except Exception as exc:  # e.g. a prompt longer than max_model_len: this request only
                h.fail(exc)
                continue
            self._active[h.request_id] = h
        cancelled = [rid for rid, h in self._active.items() if h.cancelled]
        if cancelled:
            self._safe_abort(engine, cancelled)
            for rid in cancelled:
                self._active.pop(rid).finish("abort")
        if not self._active:
            return
        self._steps += 1  # read by stats() from other threads: one int, no lock needed
        for out in engine.step():
            h = self._active.get(out.request_id)
            if h is None:
                continue
            completion = out.outputs[0]
            ids, lps = delta_of(completion)
            if out.finished:
                h.emit(ids, lps, finish_of(completion.finish_reason))
                self._active.pop(out.request_id, None)
            else:
                h.emit(ids, lps)

    @staticmethod
    def _safe_abort(engine: Any, request_ids: list[str]) -> None:
        if not request_ids:
            return
        try:
            engine.abort_request(request_ids)
        except Exception:
            logger.exception("vllm abort_request failed")
