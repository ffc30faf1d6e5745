"""The hf backend's engine: continuous batching over a plain Hugging Face causal LM.

One background thread owns the model. Requests wait in a bounded queue; each
loop of the thread

1. admits waiting requests into free row slots (up to `max_batch_size`) and
   prefills them together (left-padded; identical prompts — the n samples of
   a GRPO group — are prefilled once and their cache rows copied),
2. runs one decode step for every running row through `SlotKVCache`
   (in-place K/V writes, explicit 4-D masks and per-row positions),
3. samples each row with its own parameters and generator, emits the token
   to the request's stream callback, and retires finished rows at once, so a
   finished sequence stops costing compute and its slot is refilled on the
   next loop.

Callers get a `concurrent.futures.Future` per request (`submit`), which the
backend wraps for asyncio. A request is cancelled by `Sequence.cancel()`;
the thread drops it before its next step.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import math
import numbers
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from toolrl.rollout.base import GenerationRequest, InvalidRequestError, PromptTooLongError, QueueFullError
from toolrl.rollout.hf_cache import SlotKVCache
from toolrl.rollout.hf_prefill import Continuation, PrefillOut, cache_kwarg, prefill_continue, prefill_full
from toolrl.rollout.hf_prefix import PrefixHit, PrefixStore
from toolrl.rollout.requests import RequestHandle, StreamCallback
from toolrl.rollout.sampling import RowSampler, check_sampling, make_generator, sample_rows

logger = logging.getLogger(__name__)

class EngineClosedError(RuntimeError):
    """The engine was closed while the request waited or ran."""


@dataclass(eq=False)
class Sequence_:
    """One request in flight: its handle (future, stream, tokens) and its sampling state.

    Named with a trailing underscore to keep `typing.Sequence` usable in this module.
    """

    handle: RequestHandle
    sampler: RowSampler
    stop_ids: frozenset[int]
    max_tokens: int
    prefix: PrefixHit | None = None  # a cached prefix its prefill continues
    kv_epoch: int = -1  # the weights its cache row was computed with (see HFEngine._check_weights)

    @property
    def request(self) -> GenerationRequest:
        return self.handle.request

    @property
    def future(self) -> concurrent.futures.Future:
        return self.handle.future

    @property
    def tokens(self) -> list[int]:
        return self.handle.tokens

    @property
    def cancelled(self) -> bool:
        return self.handle.cancelled

    def cancel(self) -> None:
        """Abort: the engine drops the request before its next step (finish reason 'abort')."""
        self.handle.cancel()


class HFEngine:
    """Continuous-batching generation over one model, driven by a background thread."""

    def __init__(
        self,
        model: Any,
        *,
        eos_token_ids: Sequence[int] = (),
        max_batch_size: int = 32,
        max_queue: int = 4096,
        max_prefill_tokens: int = 8192,
        seed: int = 0,
        tokenizer: Any = None,
        device: torch.device | str | None = None,
        decode_attention: bool = False,
        prefix_cache_bytes: int = 1 << 30,
        prefix_min_tokens: int = 32,
    ):
        self.model = model
        self.tokenizer = tokenizer
        cfg = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
        kinds = set(getattr(cfg, "layer_types", None) or ["full_attention"])
        if kinds != {"full_attention"}:
            from toolrl.errors import ToolrlError

            raise ToolrlError(
                f"the hf backend supports full-attention models only; this one has layer types {sorted(kinds)}",
                where=type(model).__name__,
                fix="use rollout.backend=vllm or sglang for sliding-window / hybrid models",
            )
        if decode_attention:
            from toolrl.rollout.hf_attention import use_decode_attention

            self.decode_attention = use_decode_attention(model)
        else:
            self.decode_attention = False
        self.num_layers = int(cfg.num_hidden_layers)
        self.max_positions = int(getattr(cfg, "max_position_embeddings", 0) or 1 << 30)
        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        self.vocab_size = int(getattr(emb, "num_embeddings", 0) or getattr(cfg, "vocab_size", 0) or 1 << 62)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.eos_token_ids = frozenset(int(i) for i in eos_token_ids)
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.max_prefill_tokens = max_prefill_tokens
        self._seed = seed
        self._counter = 0
        self._cond = threading.Condition()
        self._waiting: collections.deque[Sequence_] = collections.deque()
        self._active: list[Sequence_] = []
        self._pending: torch.Tensor | None = None  # last sampled token per active row, on the device
        self._cache = SlotKVCache(self.num_layers, max_batch_size, self.device, self.dtype)
        self._cache_kwarg = cache_kwarg(model)  # `cache` on current transformers (`past_key_values` is deprecated)
        self.model_lock = _ModelLock()  # held during every forward; whoever changes the weights takes it too
        self._store = PrefixStore(prefix_cache_bytes, prefix_min_tokens)
        self._weights_version: tuple[int, int] | None = None
        self._kv_epoch = 0
        self._closed = False
        self._counters = collections.Counter()
        self._in_flight = 0  # submitted and not finished (waiting or running)
        self._done_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="toolrl-hf-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public
    def check(self, request: GenerationRequest) -> GenerationRequest:
        """Validate a request before it is queued; returns it with normalised sampling values.

        Everything wrong with one request is caught here, so it never reaches (and never fails)
        a batch: `InvalidRequestError` (a `ValueError`, naming the field) for an empty prompt,
        token ids outside the vocabulary, impossible sampling values or stop strings without a
        tokenizer; `PromptTooLongError` for a prompt that does not fit the context window.
        """
        where = f"request {request.request_id or '?'}"
        ids = request.prompt_ids
        if len(ids) == 0:
            raise InvalidRequestError("a generation request needs at least one prompt token", field="prompt_ids",
                                      where=where, fix="render the conversation into token ids first")
        try:
            lo, hi = min(ids), max(ids)
            ok = 0 <= lo and hi < self.vocab_size and all(isinstance(t, numbers.Integral) for t in (lo, hi))
        except TypeError:
            ok = False
        if not ok:
            bad = [t for t in ids if not (isinstance(t, numbers.Integral) and 0 <= t < self.vocab_size)]
            raise InvalidRequestError(
                f"prompt token ids {bad[:5]} are outside the model's vocabulary (size {self.vocab_size})",
                field="prompt_ids", where=where, fix="tokenize with the model's own tokenizer")
        if len(ids) >= self.max_positions:
            raise PromptTooLongError(
                f"the prompt has {len(ids)} tokens; the model's context window is {self.max_positions}",
                where=where,
                fix="shorten the prompt (fewer or shorter messages/tools), or use a model with a longer context",
            )
        sp = check_sampling(request.sampling, where)
        if sp.min_tokens > 0:
            raise InvalidRequestError(
                f"min_tokens={sp.min_tokens} is not supported by the hf backend", field="min_tokens", where=where,
                fix="force lengths with ignore_eos=True and max_tokens (and no stop ids), or use the vllm/sglang backend")
        if sp.stop and self.tokenizer is None:
            raise InvalidRequestError(
                "stop strings need a tokenizer, and this hf backend has none", field="stop", where=where,
                fix="pass BackendSettings.tokenizer, or stop on token ids (stop_token_ids)")
        bad_stop = [t for t in sp.stop_token_ids if not 0 <= t < self.vocab_size]
        if bad_stop:
            raise InvalidRequestError(f"stop token ids {bad_stop[:5]} are outside the model's vocabulary "
                                      f"(size {self.vocab_size})", field="stop_token_ids", where=where,
                                      fix="use ids of the model's own tokenizer")
        return request if sp is request.sampling else dataclasses.replace(request, sampling=sp)

    def submit(self, request: GenerationRequest, on_token: StreamCallback | None = None, *,
               block: bool = True) -> Sequence_:
        """Validate (`check`) and queue a request; its result arrives on `seq.future`.

        With `block=False` a full queue raises `QueueFullError` at once (serving uses
        this to answer 503); with `block=True` the caller waits for room.
        """
        request = self.check(request)
        sp = request.sampling
        plen = len(request.prompt_ids)
        with self._cond:
            if self._closed:
                raise EngineClosedError("the hf engine is closed")
            if not block and len(self._waiting) >= self.max_queue:
                self._counters["rejected"] += 1
                raise QueueFullError(
                    f"the generation queue is full ({len(self._waiting)} requests waiting)",
                    where="hf backend",
                    fix="retry later, or raise rollout.backend_args.max_queue",
                )
            while block and len(self._waiting) >= self.max_queue and not self._closed:
                self._cond.wait(0.05)
            seed = sp.seed if sp.seed is not None else hash((self._seed, self._counter)) & 0x7FFFFFFF
            self._counter += 1
            sampler = RowSampler(sp.temperature, sp.top_p, sp.top_k, make_generator(seed))  # CPU generator
            seq = Sequence_(
                handle=RequestHandle(request, request.request_id, on_token=on_token),
                sampler=sampler,
                stop_ids=(frozenset() if sp.ignore_eos else self.eos_token_ids) | frozenset(sp.stop_token_ids),
                max_tokens=min(sp.max_tokens, self.max_positions - plen),
            )
            with self._done_lock:
                self._in_flight += 1
            seq.future.add_done_callback(self._one_done)
            self._waiting.append(seq)
            self._counters["requests"] += 1
            self._cond.notify_all()
        return seq

    def _one_done(self, _future: concurrent.futures.Future) -> None:
        with self._done_lock:
            self._in_flight -= 1

    def stats(self) -> dict[str, float]:
        """Gauges (`queue_depth`: waiting; `batch_size`: running; `active`: submitted and not
        finished, i.e. waiting + running) and counters, for `rollout/...` metrics and Prometheus."""
        with self._cond:
            return {
                "queue_depth": float(len(self._waiting)),
                "batch_size": float(sum(not s.future.done() for s in list(self._active))),
                "active": float(self._in_flight),
                "max_batch_size": float(self.max_batch_size),
                "requests_total": float(self._counters["requests"]),
                "rejected_total": float(self._counters["rejected"]),
                "failed_total": float(self._counters["failed"]),
                "generated_tokens_total": float(self._counters["generated"]),
                "prefill_tokens_total": float(self._counters["prefill"]),
                "prefix_reused_tokens_total": float(self._counters["reused"]),
                "prefix_hits_total": float(self._counters["hits"]),
                "decode_steps_total": float(self._counters["steps"]),
                "kv_cache_bytes": float(self._cache.nbytes()),
                "prefix_cache_bytes": float(self._store.nbytes),
                "prefix_cache_entries": float(len(self._store)),
            }

    def release_cache(self) -> None:
        """Free the KV buffers if no request is running (they are reallocated on demand), and
        drop the cached prefixes."""
        with self._cond, self.model_lock:
            self._store.clear()
            if not self._active:
                self._cache.reset()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
        self.model_lock.owner = threading.get_ident()
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not self._active:
                    self._cond.wait()
                if self._closed:
                    break
                self._drop_cancelled_waiting()
                new: list[Sequence_] = []
                free = self.max_batch_size - len(self._active)
                budget = self.max_prefill_tokens
                while self._waiting and len(new) < free:
                    nxt = self._waiting[0]
                    if new and len(nxt.request.prompt_ids) > budget:
                        break
                    budget -= len(nxt.request.prompt_ids)
                    new.append(self._waiting.popleft())
                if new:
                    self._cond.notify_all()  # room in the queue for blocked submitters
            try:
                with self.model_lock, torch.inference_mode(), _eval_mode(self.model):
                    self._check_weights()
                    if new:
                        self._admit(new)
                    self._retire()
                    if self._active:
                        self._decode_step()
                        self._retire()
            except Exception as exc:  # not attributable to one request: fail the batch, keep serving
                hit = [s for s in {*self._active, *new} if not s.future.done()]
                logger.exception("hf engine step failed; failing the %d request(s) in the batch (the engine "
                                 "goes on with the next requests)", len(hit))
                self._counters["failed"] += len(hit)
                for seq in hit:
                    seq.handle.fail(exc)
                self._active = []
                self._pending = None
                self._cache.reset()
                self._store.clear()
        self._fail_all(EngineClosedError("the hf engine was closed"))

    def _drop_cancelled_waiting(self) -> None:
        if any(s.cancelled for s in self._waiting):
            keep = collections.deque()
            for s in self._waiting:
                if s.cancelled:
                    s.handle.finish("abort")
                else:
                    keep.append(s)
            self._waiting = keep

    def _check_weights(self) -> None:
        """Drop the cached prefixes when the weights may have changed since they were computed."""
        if not self._store.enabled:
            return
        version = (self.model_lock.epoch, sum(p._version for p in self.model.parameters()))
        if version != self._weights_version:
            self._store.clear()
            self._weights_version = version
            self._kv_epoch += 1  # rows running now hold keys/values of the old weights: never store them

    def _admit(self, new: list[Sequence_]) -> None:
        """Prefill new requests and add them to the running rows.

        A prefill that fails concerns only the requests in it: they are retried one by one, and
        only those that fail alone are failed (the running rows are not touched).
        """
        ready: list[tuple[list[Sequence_], PrefillOut]] = []
        for group in self._plan(new):
            try:
                ready.append((group, self._prefill(group)))
            except Exception as exc:
                if len({s.request.prompt_ids for s in group}) == 1:
                    self._fail_requests(group, exc)
                    continue
                for s in group:
                    try:
                        ready.append(([s], self._prefill([s])))
                    except Exception as one:
                        self._fail_requests([s], one)
        for seqs, out in ready:
            self._cache.add_rows(out.keys, out.values, out.lengths)
            for s in seqs:
                s.kv_epoch = self._kv_epoch
            self._active.extend(seqs)
            self._counters["prefill"] += out.tokens_run
            self._counters["reused"] += out.tokens_reused
            for s in seqs:
                s.prefix = None  # the entry may be evicted now
            tokens = self._accept(seqs, out.logits)
            self._pending = tokens if self._pending is None else torch.cat([self._pending, tokens])

    def _plan(self, new: list[Sequence_]) -> list[list[Sequence_]]:
        """Group new requests for prefill: whole prompts together; prompts that continue a cached
        prefix in groups of similar tail lengths (each group runs its longest tail for every row)."""
        whole: list[Sequence_] = []
        tails: list[tuple[int, Sequence_]] = []
        for s in new:
            s.prefix = self._store.match(s.request.prompt_ids) if self._store.enabled else None
            if s.prefix is None:
                whole.append(s)
            else:
                tails.append((len(s.request.prompt_ids) - s.prefix.length, s))
        groups: list[list[Sequence_]] = []
        tails.sort(key=lambda x: x[0])
        i = 0
        while i < len(tails):
            first = tails[i][0]
            j = i
            while j < len(tails) and tails[j][0] <= max(2 * first, first + 64):
                j += 1
            longest = tails[j - 1][0]
            group = []
            for _, s in tails[i:j]:  # a row must keep min_tokens of its prefix when it runs `longest`
                if len(s.request.prompt_ids) - longest >= self._store.min_tokens:
                    group.append(s)
                else:
                    s.prefix = None
                    whole.append(s)
            if group:
                groups.append(group)
            i = j
        return ([whole] if whole else []) + groups

    def _prefill(self, group: list[Sequence_]) -> PrefillOut:
        prompts = [s.request.prompt_ids for s in group]
        if group[0].prefix is None:
            return prefill_full(self.model, prompts, self.device)
        rows = [Continuation(s.request.prompt_ids, s.prefix.entry.keys, s.prefix.entry.values, s.prefix.length)
                for s in group]
        out = prefill_continue(self.model, self.num_layers, rows, self.device, self.dtype)
        self._counters["hits"] += len(group)
        return out

    def _decode_step(self) -> None:
        rows = self._active
        mask, pos = self._cache.prepare_decode()
        out = self.model(input_ids=self._pending[:, None], attention_mask=mask, position_ids=pos,
                         use_cache=True, logits_to_keep=1, **{self._cache_kwarg: self._cache})
        self._cache.advance()
        self._counters["steps"] += 1
        self._pending = self._accept(rows, out.logits[:, -1, :])

    def _accept(self, rows: list[Sequence_], logits: torch.Tensor) -> torch.Tensor:
        """Sample one token per row, record it, stream it, mark finished rows; returns the tokens (device).

        A problem with one row (non-finite logits, a stop-string check that raises) fails only that row.
        """
        tokens, logprobs = sample_rows(logits, [s.sampler for s in rows])
        both = torch.stack((tokens.to(torch.float64), logprobs.to(torch.float64))).tolist()  # one device->host copy
        toks, lps = [int(t) for t in both[0]], both[1]
        self._counters["generated"] += len(rows)
        for s, t, lp in zip(rows, toks, lps):
            try:
                if math.isnan(lp):
                    raise FloatingPointError(
                        f"the model's logits for request {s.request.request_id or '?'} are not finite (NaN/inf) "
                        f"after {len(s.tokens)} generated tokens; try dtype float32")
                reason = None
                if t in s.stop_ids or self._hit_stop_string(s, t):
                    reason = "stop"
                elif len(s.tokens) + 1 >= s.max_tokens:
                    reason = "length"
                s.handle.emit((t,), (lp,), reason)
            except Exception as exc:
                self._fail_requests([s], exc)
        return tokens

    def _fail_requests(self, seqs: list[Sequence_], exc: Exception) -> None:
        logger.warning("hf engine: failing request(s) %s: %s", [s.request.request_id or "?" for s in seqs], exc)
        self._counters["failed"] += len(seqs)
        for s in seqs:
            s.handle.fail(exc)

    def _hit_stop_string(self, s: Sequence_, new_token: int) -> bool:
        stops = s.request.sampling.stop
        if not stops or self.tokenizer is None:
            return False
        window = max(len(x) for x in stops) + 8
        tail = self.tokenizer.decode([*s.tokens[-window:], new_token], skip_special_tokens=False)
        return any(x in tail for x in stops)

    def _retire(self) -> None:
        """Drop finished and cancelled rows from the batch and the cache (keeping their prefixes)."""
        gone = []
        for i, s in enumerate(self._active):
            if s.cancelled:
                s.handle.finish("abort")
            if s.future.done():
                gone.append(i)
                self._keep_prefix(i, s)
        if gone:
            order = self._cache.remove_rows(gone)
            self._active = [self._active[i] for i in order]
            self._pending = (self._pending.index_select(0, torch.tensor(order, device=self.device))
                             if order else None)

    def _keep_prefix(self, row: int, s: Sequence_) -> None:
        """Copy a finished row (prompt + sampled tokens but the last) into the prefix store."""
        f = s.future
        if not self._store.enabled or s.kv_epoch != self._kv_epoch or f.cancelled() or f.exception() is not None:
            return
        ids = (*s.request.prompt_ids, *s.tokens[:-1])
        if len(ids) != self._cache.lengths[row] or len(ids) < self._store.min_tokens:
            return
        self._store.put(ids, *self._cache.copy_row(row))

    def _fail_all(self, exc: Exception) -> None:
        with self._cond:
            pending = [*self._waiting, *self._active]
            self._waiting.clear()
            self._active = []
        for s in pending:
            s.handle.fail(exc)


class _ModelLock:
    """The engine's model lock (an RLock) that counts acquisitions by other threads.

    Whoever changes the weights holds it (`update_weights`, a colocated trainer's update), so
    `epoch` moving tells the engine its cached prefixes may be stale.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.owner: int | None = None  # the engine thread
        self.epoch = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        ok = self._lock.acquire(blocking, timeout)
        if ok and threading.get_ident() != self.owner:
            self.epoch += 1
        return ok

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class _eval_mode:
    """Run in eval mode (no dropout, KV cache on) and restore the caller's mode afterwards."""

    def __init__(self, model: Any):
        self.model = model
        self.was_training = False

    def __enter__(self) -> None:
        self.was_training = bool(getattr(self.model, "training", False))
        if self.was_training:
            self.model.eval()

    def __exit__(self, *exc: object) -> None:
        if self.was_training:
            self.model.train()
