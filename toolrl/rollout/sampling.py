"""Next-token sampling for a batch of rows with per-row parameters and generators.

The logprob recorded for a sampled token is log softmax(logits / T)[token], with
T the row's temperature (1 for greedy rows), taken *before* top-k / top-p
truncation. That is the distribution a trainer recomputes with a
teacher-forced forward (divide the logits by the same T), so rollout and
training logprobs compare like with like; truncation only decides which
tokens can be drawn. verl and vLLM (`logprobs_mode="processed_logprobs"` with
top_p=1, top_k=0) record the same quantity.

Each row draws from its own `torch.Generator`, so a seeded request samples
the same tokens whatever else is in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class RowSampler:
    """Sampling state of one sequence: its parameters and its random generator."""

    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    generator: torch.Generator | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def truncates(self) -> bool:
        return not self.greedy and (self.top_k > 0 or self.top_p < 1.0)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    return g


def sample_rows(logits: torch.Tensor, rows: Sequence[RowSampler]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row and return (tokens [B] long, logprobs [B] float32).

    `logits` is [B, V] (any float dtype); the maths is done in float32. Sampled rows use
    inverse-CDF sampling: each row draws one uniform number from its own (CPU) generator, and
    one batched cumsum + searchsorted picks every row's token, so a row's draw does not depend
    on the batch and a step costs a few kernels, not several per row.
    """
    logits = logits.float()
    device = logits.device
    t = [r.temperature if r.temperature > 0 else 1.0 for r in rows]
    # decided on the host: no device sync before the draw
    scaled = logits / torch.tensor(t, device=device)[:, None] if any(x != 1.0 for x in t) else logits
    tokens = scaled.argmax(dim=-1)
    sampled = [i for i, r in enumerate(rows) if not r.greedy]
    if sampled:
        idx = torch.tensor(sampled, device=device)
        sub = scaled.index_select(0, idx)
        for j, i in enumerate(sampled):
            if rows[i].truncates:
                sub[j] = _truncate(sub[j], rows[i])
        cdf = torch.softmax(sub, dim=-1).cumsum(dim=-1)
        u = torch.tensor([float(torch.rand((), generator=rows[i].generator)) for i in sampled], device=device)
        picked = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(1)
        tokens = tokens.index_copy(0, idx, picked.clamp_max(cdf.shape[1] - 1))
    lse = torch.logsumexp(scaled, dim=-1)
    logprobs = scaled.gather(1, tokens[:, None]).squeeze(1) - lse
    return tokens, logprobs


def _truncate(scaled: torch.Tensor, row: RowSampler) -> torch.Tensor:
    """Top-k then top-p (nucleus) filtering of one row: dropped tokens get -inf."""
    x = scaled
    if row.top_k > 0 and row.top_k < x.numel():
        kth = torch.topk(x, row.top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if row.top_p < 1.0:
        sorted_x, order = torch.sort(x, descending=True)
        probs = torch.softmax(sorted_x, dim=-1)
        # drop a token when the mass before it already reaches top_p (the first token always stays)
        drop = (probs.cumsum(-1) - probs) >= row.top_p
        sorted_x = sorted_x.masked_fill(drop, float("-inf"))
        x = torch.full_like(x, float("-inf")).scatter(0, order, sorted_x)
    return x
