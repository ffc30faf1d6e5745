"""Teacher-forced forward passes over a TrainBatch: per-token logprobs, entropy, values.

Memory on a GPU is dominated by the full-vocabulary logits (tokens x vocabulary
x 4 bytes: 77k tokens of a 152k-vocabulary model are 46 GB), so:

- `response_logprobs` never materialises them for the whole batch: the LM head
  runs on `logits_chunk` response tokens at a time, only on real (unpadded)
  response positions, and each chunk is recomputed in backward instead of kept
  (`torch.utils.checkpoint`). The head runs *inside* the model's forward (its
  `forward` is swapped for the call), so FSDP2's hooks gather its weight as
  usual. Logprobs, entropies and gradients equal the unchunked computation
  (tested).
- `micro_batches` forms micro-batches by a token budget (samples x padded
  length, prompt groups kept whole, similar lengths together) instead of a
  fixed number of samples (`trainer.token_budget`).
- `peak_memory` reports the device's peak memory as `perf/*` metrics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from toolrl.algorithms.losses import entropy_from_logits, logprobs_from_logits
from toolrl.rollout.hf_prefill import cache_kwarg, output_cache
from toolrl.trainer import compiled
from toolrl.trainer.batch import TrainBatch

DEFAULT_LOGITS_CHUNK = 4096


def prompt_runs(batch: TrainBatch) -> list[int] | None:
    """Lengths of the runs of consecutive samples that share a prompt (a GRPO group is one run).

    None when no run is longer than 1 (nothing to share). One comparison of each sample with the one before it,
    read back once: on a GPU a comparison per sample (`torch.equal`) waited for the device each time, 60-odd
    times per micro-batch of 32.
    """
    n, P = len(batch), batch.prompt_width
    if n < 2:
        return None
    ids, mask = batch.input_ids[:, :P], batch.attention_mask[:, :P]
    continues = ((ids[1:] == ids[:-1]) & (mask[1:] == mask[:-1])).all(-1)  # sample i+1 has sample i's prompt
    starts = [0, *((~continues).nonzero().flatten() + 1).tolist(), n]
    runs = [b - a for a, b in zip(starts, starts[1:])]
    return runs if max(runs) > 1 else None


def response_logits(model: Any, batch: TrainBatch, temperature: float = 1.0, share_prompt: bool = True) -> torch.Tensor:
    """`[B, T, V]` float32 logits that predict each response token (divided by the sampling temperature).

    With `share_prompt`, samples that share a prompt (the n samples of a GRPO
    group) run it through the model once: its keys/values are repeated for each
    sample and the responses attend to them. Logprobs and gradients are the same
    as with separate passes (tested); the prompt's cost is paid once per group.
    """
    runs = prompt_runs(batch) if share_prompt else None
    logits = _shared_prompt_logits(model, batch, runs) if runs else None
    if logits is None:
        T = batch.response_width
        out = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            logits_to_keep=T + 1,
            use_cache=False,
        )
        logits = out.logits[:, :-1, :]  # position P-1+j predicts response token j
    logits = logits.float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    return logits


def _shared_prompt_logits(model: Any, batch: TrainBatch, runs: list[int]) -> torch.Tensor | None:
    return _shared_prompt_pass(model, batch, runs, hidden=False)


def _shared_prompt_pass(model: Any, batch: TrainBatch, runs: list[int], *, hidden: bool) -> torch.Tensor | None:
    """`[B, T, ...]` outputs at the positions that predict each response token, running each prompt once.

    `hidden=False`: a causal LM's logits; `hidden=True`: a backbone's last hidden states (the critic).
    None when the model's cache is of a kind this code does not know how to expand.
    """
    P, T = batch.prompt_width, batch.response_width
    counts = torch.tensor(runs, device=batch.input_ids.device)
    first = torch.cumsum(counts, 0) - counts
    prompt_kwargs = {"input_ids": batch.input_ids[first, :P], "attention_mask": batch.attention_mask[first, :P],
                         "position_ids": batch.position_ids[first, :P], "use_cache": True}
    out = model(**prompt_kwargs) if hidden else model(**prompt_kwargs, logits_to_keep=1)
    cache = output_cache(out)  # `out.cache`; `out.past_key_values` is deprecated (removal in transformers 5.40)
    layers = getattr(cache, "layers", None)
    if not layers or not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
        return None  # use separate passes
    for layer in layers:
        layer.keys = layer.keys.repeat_interleave(counts, dim=0)
        layer.values = layer.values.repeat_interleave(counts, dim=0)
    last = (out.last_hidden_state if hidden else out.logits)[:, -1:, :]
    first_out = last.repeat_interleave(counts, dim=0)  # at the prompt's last position: predicts response token 0
    if T == 1:
        return first_out
    rest = model(input_ids=batch.response_ids[:, : T - 1], attention_mask=batch.attention_mask[:, : P + T - 1],
                 position_ids=batch.position_ids[:, P : P + T - 1], use_cache=True,
                 **{cache_kwarg(model): cache})
    return torch.cat([first_out, rest.last_hidden_state if hidden else rest.logits], dim=1)


def response_logprobs(
    model: Any, batch: TrainBatch, temperature: float = 1.0, *, with_entropy: bool = False, entropy_grad: bool = False,
    share_prompt: bool = True, logits_chunk: int | None = DEFAULT_LOGITS_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probabilities of the response ids `[B, T]`, and the entropy `[B, T]` if asked.

    The entropy is computed without gradient unless `entropy_grad` (an entropy
    bonus needs it; logging does not, and skipping it saves a `[B, T, V]` graph).
    With `logits_chunk` (default) the LM head runs chunk by chunk on the real
    response tokens (module doc); padding positions get logprob 0 and entropy 0.
    `logits_chunk=None` computes the whole `[B, T, V]` logits at once.
    """
    head = _chunkable_head(model) if logits_chunk else None
    if head is not None:
        return _chunked_response_logprobs(model, head, batch, temperature, with_entropy, entropy_grad, share_prompt,
                                          int(logits_chunk or DEFAULT_LOGITS_CHUNK))
    logits = response_logits(model, batch, temperature, share_prompt)
    logprobs = logprobs_from_logits(logits, batch.response_ids)
    entropy = None
    if with_entropy:
        if entropy_grad:
            entropy = entropy_from_logits(logits)
        else:
            with torch.no_grad():
                entropy = entropy_from_logits(logits.detach())
    return logprobs, entropy


# ----------------------------------------------------------------------------------------------
# Micro-batches by token budget, peak memory, gradient checkpointing
# ----------------------------------------------------------------------------------------------


def micro_batches(batch: TrainBatch, micro_batch_size: int, token_budget: int | None = None,
                  group_size: int = 1) -> list[TrainBatch]:
    """The micro-batches of one forward/backward each: `micro_batch_size` samples, or by `token_budget`.

    With a budget, units (a prompt group of `group_size` consecutive samples with the same group id, else one
    sample) are sorted by length, longest first, and packed while rows x (longest prompt + longest response)
    stays within the budget; a unit larger than the budget is split into single samples, and a single
    sample larger than the budget gets a micro-batch of its own. Gradients summed over micro-batches do
    not depend on how they are formed; only padding and the number of passes change.
    """
    if not token_budget:
        return batch.split(micro_batch_size)
    P = batch.prompt_width
    plen = batch.attention_mask[:, :P].sum(-1).tolist()
    rlen = batch.attention_mask[:, P:].sum(-1).tolist()
    units: list[list[int]] = []
    i = 0
    while i < len(batch):
        j = i + 1
        if group_size > 1:
            while j < len(batch) and j - i < group_size and batch.group_ids[j] == batch.group_ids[i]:
                j += 1
        units.append(list(range(i, j)))
        i = j

    def cost(rows: list[int]) -> int:
        return len(rows) * (max(plen[r] for r in rows) + max(rlen[r] for r in rows))

    pieces: list[list[int]] = []
    for u in units:
        pieces.extend([u] if cost(u) <= token_budget else [[r] for r in u])
    pieces.sort(key=lambda u: (-max(plen[r] + rlen[r] for r in u), u[0]))
    out: list[list[int]] = []
    current: list[int] = []
    for u in pieces:
        if current and cost(current + u) > token_budget:
            out.append(current)
            current = []
        current = current + u
    if current:
        out.append(current)
    return [batch.select(sorted(rows)) for rows in out]


def uses_gradient_checkpointing(model: Any) -> bool:
    """Whether the (HF, possibly PEFT-wrapped or FSDP-sharded) model recomputes activations in backward."""
    flag = getattr(model, "is_activation_checkpointing", None)
    if flag is None:  # transformers before `is_gradient_checkpointing` was renamed (the old name now warns)
        flag = getattr(model, "is_gradient_checkpointing", False)
    return bool(flag)


def gradient_checkpointing_wanted(setting: bool | None, device: torch.device | str) -> bool:
    """`model.gradient_checkpointing` resolved: None means on for CUDA, off on the CPU."""
    if setting is None:
        return torch.device(device).type == "cuda"
    return bool(setting)


def peak_memory(device: torch.device | str, *, reset: bool = True) -> dict[str, float]:
    """`perf/peak_memory_gib` (allocated by tensors) and `perf/peak_reserved_gib` (held by the caching allocator)
    on a CUDA device since the last reset, then reset; {} on the CPU."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return {}
    gib = float(1 << 30)
    out = {"perf/peak_memory_gib": torch.cuda.max_memory_allocated(device) / gib,
           "perf/peak_reserved_gib": torch.cuda.max_memory_reserved(device) / gib}
    if reset:
        torch.cuda.reset_peak_memory_stats(device)
    return out


# ----------------------------------------------------------------------------------------------
# Chunked LM head
# ----------------------------------------------------------------------------------------------


def _chunkable_head(model: Any) -> torch.nn.Linear | None:
    """The model's LM head when it is a plain linear layer applied last (no logit soft-capping/scaling)."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if not isinstance(head, torch.nn.Linear):
        return None
    config = getattr(model, "config", None)
    for attr in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale"):
        if getattr(config, attr, None) not in (None, 1, 1.0):
            return None
    return head


def _lp_entropy(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                temperature: float, entropy: bool, entropy_grad: bool) -> torch.Tensor:
    """`[N, 1 or 2]`: logprob of each target (and the entropy) from hidden states `[N, H]` (one chunk)."""
    logits = torch.nn.functional.linear(h, weight, bias).float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    lp = logprobs_from_logits(logits, targets)
    if not entropy:
        return lp[:, None]
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        ent = entropy_from_logits(logits)
    return torch.stack((lp, ent.to(lp.dtype)), dim=-1)


class _FusedLogprob(torch.autograd.Function):
    """Logprobs of `targets` (and, without gradient, entropies) under `head(h)` for one chunk, in few passes.

    Forward: logits (the head's GEMM, in `h`'s dtype) -> float32 log-softmax in one kernel -> the targets'
    logprobs; the entropy (when asked) from the same log-softmax. Nothing of size `[N, V]` is saved:
    backward recomputes the logits and forms d logprob / d logits = onehot - softmax in place, so a chunk
    costs a handful of passes over its logits where the autograd graph of the same formulas (float copy,
    logsumexp, gather, their backwards) took about three times as many. Only the logprobs carry gradient.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, targets, temperature, with_entropy):  # type: ignore[override]
        ctx.save_for_backward(h, weight, bias, targets)
        ctx.temperature = temperature
        return _fused_logprob_entropy(h, weight, bias, targets, temperature, with_entropy)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        h, weight, bias, targets = ctx.saved_tensors
        g = grad_out[:, 0].float()
        logits = torch.nn.functional.linear(h, weight, bias)
        grad = _softmax(logits, ctx.temperature)  # float32 [N, V]
        del logits
        grad.mul_(-g[:, None])  # d lp/d z = onehot - softmax
        grad.scatter_add_(1, targets[:, None], g[:, None])
        if ctx.temperature > 0 and ctx.temperature != 1.0:
            grad.div_(ctx.temperature)
        grad = grad.to(h.dtype)
        grad_h = grad @ weight if ctx.needs_input_grad[0] else None
        grad_w = grad.t() @ h if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if bias is not None and ctx.needs_input_grad[2] else None
        return grad_h, grad_w, grad_b, None, None, None


def _fused_logprob_entropy(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                           temperature: float, with_entropy: bool) -> torch.Tensor:
    """`[N, 1 or 2]` float32: the targets' logprobs (and the entropies) from one float32 log-softmax."""
    logp = _log_softmax(torch.nn.functional.linear(h, weight, bias), temperature)
    lp = logp.gather(1, targets[:, None])
    if not with_entropy:
        return lp
    ent = -torch.einsum("nv,nv->n", logp.exp(), logp)  # a batched dot: p * logp is not materialised
    return torch.cat((lp, ent[:, None]), 1)


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature > 0 and temperature != 1.0:
        return logits.float().div_(temperature)
    return logits


def _log_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.log_softmax(_scaled(logits, temperature), dim=-1, dtype=torch.float32)


def _softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(_scaled(logits, temperature), dim=-1, dtype=torch.float32)


def chunked_logprobs(h: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor, temperature: float = 1.0, *,
                     chunk: int = DEFAULT_LOGITS_CHUNK, with_entropy: bool = False,
                     entropy_grad: bool = False) -> torch.Tensor:
    """`[N, 1 or 2]` logprobs (and entropies) of `targets` `[N]` under `head(h)`, `chunk` rows of logits at a time.

    At most one chunk's `[chunk, V]` logits exist at any time: with gradients on, each chunk's logits are
    freed after the forward and recomputed in backward (`_FusedLogprob`; with an entropy that needs its
    gradient, an autograd checkpoint of the plain formulas).
    """
    outs = []
    grad = torch.is_grad_enabled() and (h.requires_grad or head.weight.requires_grad)
    for s in range(0, h.shape[0], chunk):
        hs, ts = h[s : s + chunk], targets[s : s + chunk]
        if grad and with_entropy and entropy_grad:
            outs.append(torch.utils.checkpoint.checkpoint(_lp_entropy, hs, head.weight, head.bias, ts, temperature,
                                                          with_entropy, entropy_grad, use_reentrant=False))
        elif grad:
            outs.append(_FusedLogprob.apply(hs, head.weight, head.bias, ts, temperature, with_entropy))
        else:
            outs.append(_fused_logprob_entropy(hs, head.weight, head.bias, ts, temperature, with_entropy))
    if not outs:
        return h.new_zeros((0, 2 if with_entropy else 1), dtype=torch.float32)
    return torch.cat(outs, 0)


@contextlib.contextmanager
def _head_replaced(head: torch.nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Run `fn` instead of `head.forward` (inside the model's own forward, where FSDP2 has gathered the weights)."""
    had = "forward" in head.__dict__
    saved = head.__dict__.get("forward")
    head.forward = fn  # type: ignore[method-assign]
    try:
        yield
    finally:
        if had:
            head.forward = saved  # type: ignore[method-assign]
        else:
            del head.forward


class _ResponseHead:
    """The chunked LM head for one batch: logprobs (and entropies) of the response tokens at given columns."""

    def __init__(self, head: torch.nn.Linear, batch: TrainBatch, temperature: float, with_entropy: bool,
                 entropy_grad: bool, chunk: int):
        self.head, self.batch, self.chunk = head, batch, chunk
        self.temperature, self.with_entropy, self.entropy_grad = temperature, with_entropy, entropy_grad
        P, T = batch.prompt_width, batch.response_width
        self.real = batch.attention_mask[:, P : P + T].bool()  # real response tokens (padding is never computed)

    def columns(self, cols: slice) -> Callable[[torch.Tensor], torch.Tensor]:
        """A head for hidden states `[B, L, H]` that predict response columns `cols`: returns `[B, L, k]`."""

        def fn(h: torch.Tensor) -> torch.Tensor:
            keep = self.real[:, cols]
            vals = chunked_logprobs(h[keep], self.head, self.batch.response_ids[:, cols][keep], self.temperature,
                                    chunk=self.chunk, with_entropy=self.with_entropy, entropy_grad=self.entropy_grad)
            full = torch.zeros((*keep.shape, vals.shape[-1]), dtype=vals.dtype, device=vals.device)
            return full.index_put((keep,), vals)  # out of place: gradients flow to vals

        return fn

    def from_logits(self, logits: torch.Tensor, col: int) -> torch.Tensor:
        """`[B, 1, k]` for response column `col` from already computed logits `[B, V]`."""
        logits = logits.float()
        if self.temperature > 0 and self.temperature != 1.0:
            logits = logits / self.temperature
        lp = logprobs_from_logits(logits, self.batch.response_ids[:, col])
        parts = [lp]
        if self.with_entropy:
            with torch.set_grad_enabled(self.entropy_grad and torch.is_grad_enabled()):
                parts.append(entropy_from_logits(logits).to(lp.dtype))
        vals = torch.stack(parts, dim=-1) * self.real[:, col, None]
        return vals[:, None, :]


def _chunked_response_logprobs(model: Any, head: torch.nn.Linear, batch: TrainBatch, temperature: float,
                               with_entropy: bool, entropy_grad: bool, share_prompt: bool,
                               chunk: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    P, T = batch.prompt_width, batch.response_width
    rh = _ResponseHead(head, batch, temperature, with_entropy, entropy_grad, chunk)
    runs = prompt_runs(batch) if share_prompt else None
    out = _shared_prompt_chunked(model, head, batch, runs, rh) if runs else None
    if out is None:
        with _head_replaced(head, rh.columns(slice(0, T))):
            # positions P-1 .. P+T-2 predict response tokens 0 .. T-1 (the last input position predicts nothing)
            out = model(input_ids=batch.input_ids[:, : P + T - 1], attention_mask=batch.attention_mask[:, : P + T - 1],
                        position_ids=batch.position_ids[:, : P + T - 1], logits_to_keep=T, use_cache=False).logits
    logprobs = out[..., 0]
    entropy = out[..., 1] if with_entropy else None
    if entropy is not None and not entropy_grad:
        entropy = entropy.detach()
    return logprobs, entropy


def _shared_prompt_chunked(model: Any, head: torch.nn.Linear, batch: TrainBatch, runs: list[int],
                           rh: _ResponseHead) -> torch.Tensor | None:
    """`_shared_prompt_pass` with the chunked head: each prompt once (its last position's logits, one row per
    group, give response token 0 of each of its samples), then the responses through the chunked head."""
    P, T = batch.prompt_width, batch.response_width
    counts = torch.tensor(runs, device=batch.input_ids.device)
    first = torch.cumsum(counts, 0) - counts
    out = model(input_ids=batch.input_ids[first, :P], attention_mask=batch.attention_mask[first, :P],
                position_ids=batch.position_ids[first, :P], use_cache=True, logits_to_keep=1)
    cache = output_cache(out)  # `out.cache`; `out.past_key_values` is deprecated (removal in transformers 5.40)
    layers = getattr(cache, "layers", None)
    if not layers or not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
        return None
    for layer in layers:
        layer.keys = layer.keys.repeat_interleave(counts, dim=0)
        layer.values = layer.values.repeat_interleave(counts, dim=0)
    first_vals = rh.from_logits(out.logits[:, -1, :].repeat_interleave(counts, dim=0), 0)
    if T == 1:
        return first_vals
    with _head_replaced(head, rh.columns(slice(1, T))):
        rest = model(input_ids=batch.response_ids[:, : T - 1], attention_mask=batch.attention_mask[:, : P + T - 1],
                     position_ids=batch.position_ids[:, P : P + T - 1], use_cache=True,
                     **{cache_kwarg(model): cache}).logits
    return torch.cat([first_vals, rest], dim=1)


@torch.no_grad()
def batched_logprobs(model: Any, batch: TrainBatch, micro_batch_size: int, temperature: float = 1.0,
                     share_prompt: bool = True, logits_chunk: int | None = DEFAULT_LOGITS_CHUNK) -> torch.Tensor:
    """`response_logprobs` over the whole batch in micro-batches, without gradient, on the model's device."""
    device = next(model.parameters()).device
    share_prompt = share_prompt and not compiled.is_prepared(model)  # compiled layers take no KV cache
    widths = compiled.width_multiple(model)
    parts = []
    with compiled.compiled_layers(model):
        for micro in batch.split(micro_batch_size):
            compiled.micro_batch_begin(model)
            lp, _ = response_logprobs(model, micro.trimmed(widths).to(device), temperature,
                                      share_prompt=share_prompt, logits_chunk=logits_chunk)
            lp = lp[:, : batch.response_width]  # (rounded-up widths may be wider than the batch)
            # `pad` always returns new memory (a clone when there is nothing to pad), so no part refers to a replayed
            # CUDA graph's buffers, which the next micro-batch overwrites
            parts.append(torch.nn.functional.pad(lp, (0, batch.response_width - lp.shape[1])))
    # one copy back at the end ([B, T] floats: small), so the host never waits for the device between micro-batches
    return torch.cat(parts, 0).cpu() * batch.response_mask


def critic_values(critic: Any, batch: TrainBatch, share_prompt: bool = True) -> torch.Tensor:
    """`[B, T]` values of the states that precede each response token (shared prompts run once, as above)."""
    P, T = batch.prompt_width, batch.response_width
    runs = prompt_runs(batch) if share_prompt else None
    hidden = _shared_prompt_pass(critic.backbone, batch, runs, hidden=True) if runs else None
    if hidden is not None:
        return critic.value_head(hidden.to(critic.value_head.weight.dtype)).squeeze(-1).float()
    v = critic(batch.input_ids, batch.attention_mask, batch.position_ids)
    return v[:, P - 1 : P + T - 1].float()


@torch.no_grad()
def batched_values(critic: Any, batch: TrainBatch, micro_batch_size: int, share_prompt: bool = True) -> torch.Tensor:
    device = next(critic.parameters()).device
    parts = []
    for micro in batch.split(micro_batch_size):
        v = critic_values(critic, micro.trimmed().to(device), share_prompt)
        parts.append(torch.nn.functional.pad(v, (0, batch.response_width - v.shape[1])))
    return torch.cat(parts, 0).cpu() * batch.response_mask
