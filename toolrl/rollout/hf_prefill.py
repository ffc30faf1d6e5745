"""Prefill forwards for the hf engine: whole prompts, or only the new tail of a cached prefix.

Both return the new rows' keys and values in the layout `SlotKVCache.add_rows`
takes (per layer `[m, H, W, D]`, row i's tokens in its last `lengths[i]`
columns) and the logits of each prompt's last token. Neither touches the
engine's state, so a failure here concerns only the requests being prefilled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from toolrl.rollout.hf_cache import SlotKVCache


@dataclass
class PrefillOut:
    """Keys/values per layer `[m, H, W, D]`, prompt lengths and last-token logits `[m, V]`."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    lengths: list[int]
    logits: torch.Tensor
    tokens_run: int  # prompt tokens that went through the model
    tokens_reused: int  # prompt tokens taken from cached prefixes


def cache_kwarg(model: Any) -> str:
    """The forward keyword that takes a KV cache: `cache` (transformers >= 5.2x), else `past_key_values`.

    transformers deprecates `past_key_values` (removal announced for 5.40); the engine passes its cache
    under the name the installed version's model declares, so it neither warns nor breaks on older ones.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = _CACHE_KWARG.get(type(base))
    if name is None:
        import inspect

        params = inspect.signature(base.forward).parameters
        if "cache" in params or "past_key_values" in params:
            name = "cache" if "cache" in params else "past_key_values"
        else:  # a wrapper taking **kwargs: the name the installed transformers' models use
            from transformers.modeling_outputs import CausalLMOutputWithPast

            name = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
        _CACHE_KWARG[type(base)] = name
    return name


_CACHE_KWARG: dict[type, str] = {}


def output_cache(out: Any) -> Any:
    """The KV cache a forward returned (`out.cache`, or `out.past_key_values` on older transformers)."""
    fields = getattr(out, "__dataclass_fields__", {})
    return out.cache if "cache" in fields else out.past_key_values


def _cache_tensors(cache: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [layer.keys for layer in layers], [layer.values for layer in layers]
    return list(cache.key_cache), list(cache.value_cache)  # older transformers


def _expand(out: PrefillOut, rows: list[int], lengths: list[int], device: torch.device) -> PrefillOut:
    """Rows for every request from the rows of the unique prompts (identical prompts share one)."""
    if rows == list(range(len(out.lengths))):
        return out
    idx = torch.tensor(rows, device=device)
    return PrefillOut([k.index_select(0, idx) for k in out.keys], [v.index_select(0, idx) for v in out.values],
                      lengths, out.logits.index_select(0, idx), out.tokens_run, out.tokens_reused)


def prefill_full(model: Any, prompts: Sequence[Sequence[int]], device: torch.device) -> PrefillOut:
    """Left-padded prefill of whole prompts; identical prompts (a GRPO group) run once."""
    uniq: dict[tuple[int, ...], int] = {}
    for p in prompts:
        uniq.setdefault(tuple(p), len(uniq))
    todo = list(uniq)
    width = max(len(x) for x in todo)
    ids = torch.zeros((len(todo), width), dtype=torch.long)
    attn = torch.zeros((len(todo), width), dtype=torch.long)
    for i, x in enumerate(todo):
        ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
        attn[i, width - len(x):] = 1
    pos = (attn.cumsum(-1) - 1).clamp_min(0)
    ids, attn, pos = ids.to(device), attn.to(device), pos.to(device)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1)
    keys, values = _cache_tensors(output_cache(out))
    res = PrefillOut(keys, values, [len(x) for x in todo], out.logits[:, -1, :], sum(len(x) for x in todo), 0)
    return _expand(res, [uniq[tuple(p)] for p in prompts], [len(p) for p in prompts], device)


@dataclass(frozen=True)
class Continuation:
    """A prompt whose first `reuse` tokens have cached keys/values (per layer `[H, >= reuse, D]`)."""

    prompt: tuple[int, ...]
    keys: Sequence[torch.Tensor]
    values: Sequence[torch.Tensor]
    reuse: int


def prefill_continue(model: Any, num_layers: int, rows: Sequence[Continuation], device: torch.device,
                     dtype: torch.dtype) -> PrefillOut:
    """Run only the tails of prompts that continue cached prefixes, in one batched forward.

    Every row runs the same number of new tokens, S = the longest tail: a row with a shorter
    tail recomputes its last cached tokens instead of padding (so no query row is empty).
    The cached rows go right-aligned into a `SlotKVCache`, which then takes the S new columns.
    """
    uniq: dict[tuple[int, ...], int] = {}
    todo: list[Continuation] = []
    for r in rows:
        if r.prompt not in uniq:
            uniq[r.prompt] = len(todo)
            todo.append(r)
    q = max(len(r.prompt) - r.reuse for r in todo)
    reuse = [len(r.prompt) - q for r in todo]
    if min(reuse) < 1:
        raise ValueError(f"a continued prompt is shorter than the longest tail ({q} tokens)")
    cache = SlotKVCache(num_layers, len(todo), device, dtype)
    cache.load_rows([([k[:, :n] for k in r.keys], [v[:, :n] for v in r.values]) for r, n in zip(todo, reuse)],
                    room=q)
    mask, pos = cache.prepare_extend(q)
    ids = torch.tensor([r.prompt[n:] for r, n in zip(todo, reuse)], dtype=torch.long, device=device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                **{cache_kwarg(model): cache})
    cache.advance(q)
    keys, values = cache.rows()
    res = PrefillOut(keys, values, [len(r.prompt) for r in todo], out.logits[:, -1, :], q * len(todo), sum(reuse))
    return _expand(res, [uniq[r.prompt] for r in rows], [len(r.prompt) for r in rows], device)
