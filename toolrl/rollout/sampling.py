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

import dataclasses
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from toolrl.rollout.base import InvalidRequestError, SamplingParams

# Below this a temperature means greedy: dividing float32 logits by ~0 overflows to inf and
# then NaN (vLLM draws the same line). A greedy row records logprobs at T = 1.
GREEDY_BELOW = 1e-5


@dataclass
class RowSampler:
    """Sampling state of one sequence: its parameters and its random generator."""

    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    generator: torch.Generator | None = None

    @property
    def greedy(self) -> bool:
        return not self.temperature >= GREEDY_BELOW  # (NaN too: never divide by it)

    @property
    def truncates(self) -> bool:
        return not self.greedy and (self.top_k > 0 or self.top_p < 1.0)


def check_sampling(sp: SamplingParams, where: str = "generation request") -> SamplingParams:
    """Validate a request's sampling values and return them normalised.

    Raises `InvalidRequestError` (a `ValueError`) naming the field for values no sampler can
    use: a temperature that is negative, NaN or infinite; `top_p` outside (0, 1]; a negative
    `top_k`; `max_tokens` < 1; a seed or stop token id that is not an integer; an empty stop
    string; `min_tokens` outside [0, max_tokens]; a non-bool `ignore_eos`. Temperatures below `GREEDY_BELOW` become 0 (greedy), so 6e-136 is argmax, not NaN.
    """

    def bad(field: str, what: str, fix: str) -> InvalidRequestError:
        return InvalidRequestError(f"{field} {what}", field=field, where=where, fix=fix)

    def real(field: str, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise bad(field, f"must be a number, got {value!r}", f"pass {field} as a float")
        x = float(value)
        if not math.isfinite(x):
            raise bad(field, f"must be finite, got {x}", f"pass a finite {field}")
        return x

    def integer(field: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise bad(field, f"must be an integer, got {value!r}", f"pass {field} as an int")
        return int(value)

    temperature = real("temperature", sp.temperature)
    if temperature < 0:
        raise bad("temperature", f"must be >= 0, got {temperature}", "use 0 for greedy decoding, or a positive value")
    if temperature < GREEDY_BELOW:
        temperature = 0.0
    top_p = real("top_p", sp.top_p)
    if not 0.0 < top_p <= 1.0:
        raise bad("top_p", f"must be in (0, 1], got {top_p}", "use 1.0 to turn nucleus sampling off")
    top_k = integer("top_k", sp.top_k)
    if top_k < 0:
        raise bad("top_k", f"must be >= 0, got {top_k}", "use 0 to turn top-k off")
    max_tokens = integer("max_tokens", sp.max_tokens)
    if max_tokens < 1:
        raise bad("max_tokens", f"must be >= 1, got {max_tokens}", "ask for at least one new token")
    if sp.seed is not None:
        integer("seed", sp.seed)
    if not isinstance(sp.ignore_eos, bool):
        raise bad("ignore_eos", f"must be a bool, got {sp.ignore_eos!r}", "pass ignore_eos=True or False")
    min_tokens = integer("min_tokens", sp.min_tokens)
    if not 0 <= min_tokens <= max_tokens:
        raise bad("min_tokens", f"must be in [0, max_tokens={max_tokens}], got {min_tokens}",
                  "use 0 (no minimum), or at most max_tokens")
    stop_ids = tuple(integer("stop_token_ids", t) for t in sp.stop_token_ids)
    if isinstance(sp.stop, str):
        raise bad("stop", f"must be a tuple of strings, got the string {sp.stop!r}", f"pass stop=({sp.stop!r},)")
    for x in sp.stop:
        if not isinstance(x, str) or not x:
            raise bad("stop", f"entries must be non-empty strings, got {x!r}", "drop empty stop strings")
    changed = dict(temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens,
                   stop_token_ids=stop_ids, stop=tuple(sp.stop))
    if all(getattr(sp, k) == v and type(getattr(sp, k)) is type(v) for k, v in changed.items()):
        return sp
    return dataclasses.replace(sp, **changed)


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
    t = [1.0 if r.greedy else r.temperature for r in rows]
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
        # drop a token when the mass before it already reaches top_p; the most likely token always
        # stays (a top_p that rounds to 0 in float32 would otherwise drop every token)
        drop = (probs.cumsum(-1) - probs) >= row.top_p
        drop[0] = False
        sorted_x = sorted_x.masked_fill(drop, float("-inf"))
        x = torch.full_like(x, float("-inf")).scatter(0, order, sorted_x)
    return x
