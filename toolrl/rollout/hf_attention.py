"""A decode-step attention for the hf engine, registered as transformers attention "toolrl_sdpa".

For one new token per row (a decode step) with the engine's explicit boolean
mask, attention is two small batched matmuls over the key/value heads
(grouped-query heads packed as extra query rows) and a masked softmax. Every
other call (prefill, training forwards, no mask) goes to transformers' own
`sdpa_attention_forward` unchanged, and masks are built by its `sdpa_mask`, so
a model switched to "toolrl_sdpa" computes the same numbers everywhere.

PyTorch's CPU flash-attention kernel is built for long query blocks; for a
single query row per head its tiling overhead dominates, which the matmul form
avoids. `HFEngine(decode_attention=True)` switches an sdpa model to it.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "toolrl_sdpa"
_registered = False


def decode_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    if (query.shape[2] == 1 and attention_mask is not None and attention_mask.dtype == torch.bool
            and attention_mask.dim() == 4 and attention_mask.shape[1] == 1 and not module.training
            and kwargs.get("position_bias") is None and kwargs.get("softcap") is None):
        b, heads, _, dim = query.shape
        kv_heads = key.shape[1]
        scale = scaling if scaling is not None else dim ** -0.5
        q = query.reshape(b, kv_heads, heads // kv_heads, dim)  # grouped heads as query rows
        scores = torch.matmul(q, key.transpose(-1, -2)) * scale
        scores = scores.masked_fill(~attention_mask, float("-inf"))
        out = torch.matmul(torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype), value)
        return out.reshape(b, heads, 1, dim).transpose(1, 2), None
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  is_causal=is_causal, **kwargs)


def register() -> str:
    """Register "toolrl_sdpa" with transformers (once) and return the name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(NAME, decode_attention)
        AttentionMaskInterface.register(NAME, sdpa_mask)
        _registered = True
    return NAME


def use_decode_attention(model: Any) -> bool:
    """Switch an sdpa model to "toolrl_sdpa"; returns whether it was switched."""
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if impl == NAME:
        return True
    if impl != "sdpa" or not hasattr(model, "set_attn_implementation"):
        return False
    model.set_attn_implementation(register())
    return True
