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
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from toolrl.rollout.base import GenerationRequest, PromptTooLongError, QueueFullError
from toolrl.rollout.hf_cache import SlotKVCache
from toolrl.rollout.requests import RequestHandle, StreamCallback
from toolrl.rollout.sampling import RowSampler, make_generator, sample_rows

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
        self.vocab_size = int(getattr(cfg, "vocab_size", 0) or 1 << 62)
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
        self.model_lock = threading.RLock()  # held during every forward; update_weights takes it too
        self._closed = False
        self._counters = collections.Counter()
        self._thread = threading.Thread(target=self._run, name="toolrl-hf-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public
    def submit(self, request: GenerationRequest, on_token: StreamCallback | None = None, *,
               block: bool = True) -> Sequence_:
        """Queue a request; its result arrives on `seq.future`.

        With `block=False` a full queue raises `QueueFullError` at once (serving uses
        this to answer 503); with `block=True` the caller waits for room.
        """
        sp = request.sampling
        plen = len(request.prompt_ids)
        if plen == 0:
            raise ValueError("a generation request needs at least one prompt token")
        if sp.stop and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer, and this hf backend has none; pass "
                             "BackendSettings.tokenizer, or stop on token ids (stop_token_ids)")
        bad = [t for t in request.prompt_ids if not 0 <= int(t) < self.vocab_size]
        if bad:
            raise ValueError(f"prompt token ids {bad[:5]} are outside the model's vocabulary (size {self.vocab_size})")
        if plen >= self.max_positions:
            raise PromptTooLongError(
                f"the prompt has {plen} tokens; the model's context window is {self.max_positions}",
                where=f"request {request.request_id or '?'}",
                fix="shorten the prompt (fewer or shorter messages/tools), or use a model with a longer context",
            )
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
                stop_ids=self.eos_token_ids | frozenset(int(i) for i in sp.stop_token_ids),
                max_tokens=max(0, min(sp.max_tokens, self.max_positions - plen)),
            )
            if seq.max_tokens == 0:
                seq.handle.finish("length")
                return seq
            self._waiting.append(seq)
            self._counters["requests"] += 1
            self._cond.notify_all()
        return seq

    def stats(self) -> dict[str, float]:
        with self._cond:
            return {
                "queue_depth": float(len(self._waiting)),
                "batch_size": float(sum(not s.future.done() for s in list(self._active))),
                "max_batch_size": float(self.max_batch_size),
                "requests_total": float(self._counters["requests"]),
                "rejected_total": float(self._counters["rejected"]),
                "generated_tokens_total": float(self._counters["generated"]),
                "prefill_tokens_total": float(self._counters["prefill"]),
                "decode_steps_total": float(self._counters["steps"]),
                "kv_cache_bytes": float(self._cache.nbytes()),
            }

    def release_cache(self) -> None:
        """Free the KV buffers if no request is running (they are reallocated on demand)."""
        with self._cond, self.model_lock:
            if not self._active:
                self._cache.reset()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
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
                    if new:
                        self._prefill(new)
                    self._retire()
                    if self._active:
                        self._decode_step()
                        self._retire()
            except Exception as exc:  # a failing step must not leave callers waiting forever
                logger.exception("hf engine step failed; failing %d running request(s)", len(self._active) + len(new))
                for seq in {*self._active, *new}:
                    seq.handle.fail(exc)
                self._active = []
                self._pending = None
                self._cache.reset()
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

    def _prefill(self, new: list[Sequence_]) -> None:
        """Prefill new requests (identical prompts once) and add them to the running rows."""
        uniq: dict[tuple[int, ...], int] = {}
        for s in new:
            uniq.setdefault(tuple(s.request.prompt_ids), len(uniq))
        prompts = list(uniq)
        p = max(len(x) for x in prompts)
        pad = 0
        ids = torch.full((len(prompts), p), pad, dtype=torch.long)
        attn = torch.zeros((len(prompts), p), dtype=torch.long)
        for i, x in enumerate(prompts):
            ids[i, p - len(x):] = torch.tensor(x, dtype=torch.long)
            attn[i, p - len(x):] = 1
        pos = (attn.cumsum(-1) - 1).clamp_min(0)
        ids, attn, pos = ids.to(self.device), attn.to(self.device), pos.to(self.device)
        out = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1)
        self._counters["prefill"] += int(attn.sum())
        cache = out.past_key_values
        layers = getattr(cache, "layers", None)
        if layers is not None:
            keys = [layer.keys for layer in layers]
            values = [layer.values for layer in layers]
        else:  # older transformers
            keys, values = list(cache.key_cache), list(cache.value_cache)
        rows = torch.tensor([uniq[tuple(s.request.prompt_ids)] for s in new], device=self.device)
        if len(prompts) != len(new) or len(prompts) > 1:
            keys = [k.index_select(0, rows) for k in keys]
            values = [v.index_select(0, rows) for v in values]
        self._cache.add_rows(keys, values, [len(s.request.prompt_ids) for s in new])
        logits = out.logits[:, -1, :].index_select(0, rows)
        self._active.extend(new)
        tokens = self._accept(new, logits)
        self._pending = tokens if self._pending is None else torch.cat([self._pending, tokens])

    def _decode_step(self) -> None:
        rows = self._active
        mask, pos = self._cache.prepare_decode()
        out = self.model(input_ids=self._pending[:, None], attention_mask=mask, position_ids=pos,
                         past_key_values=self._cache, use_cache=True, logits_to_keep=1)
        self._cache.advance()
        self._counters["steps"] += 1
        self._pending = self._accept(rows, out.logits[:, -1, :])

    def _accept(self, rows: list[Sequence_], logits: torch.Tensor) -> torch.Tensor:
        """Sample one token per row, record it, stream it, mark finished rows; returns the tokens (device)."""
        tokens, logprobs = sample_rows(logits, [s.sampler for s in rows])
        both = torch.stack((tokens.to(torch.float64), logprobs.to(torch.float64))).tolist()  # one device->host copy
        toks, lps = [int(t) for t in both[0]], both[1]
        self._counters["generated"] += len(rows)
        for s, t, lp in zip(rows, toks, lps):
            reason = None
            if t in s.stop_ids or self._hit_stop_string(s, t):
                reason = "stop"
            elif len(s.tokens) + 1 >= s.max_tokens:
                reason = "length"
            s.handle.emit((t,), (lp,), reason)
        return tokens

    def _hit_stop_string(self, s: Sequence_, new_token: int) -> bool:
        stops = s.request.sampling.stop
        if not stops or self.tokenizer is None:
            return False
        window = max(len(x) for x in stops) + 8
        tail = self.tokenizer.decode([*s.tokens[-window:], new_token], skip_special_tokens=False)
        return any(x in tail for x in stops)

    def _retire(self) -> None:
        """Drop finished and cancelled rows from the batch and the cache."""
        gone = []
        for i, s in enumerate(self._active):
            if s.cancelled:
                s.handle.finish("abort")
            if s.future.done():
                gone.append(i)
        if gone:
            order = self._cache.remove_rows(gone)
            self._active = [self._active[i] for i in order]
            self._pending = (self._pending.index_select(0, torch.tensor(order, device=self.device))
                             if order else None)

    def _fail_all(self, exc: Exception) -> None:
        with self._cond:
            pending = [*self._waiting, *self._active]
            self._waiting.clear()
            self._active = []
        for s in pending:
            s.handle.fail(exc)


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
