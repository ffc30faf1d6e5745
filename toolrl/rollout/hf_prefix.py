"""Prefix reuse for the hf engine: the KV rows of finished requests, kept for follow-ups.

In a multi-turn episode a turn's prompt is the previous turn's prompt + the
tokens it sampled + the tool message, so all but the last few dozen tokens were
already run through the model. When a request finishes, the engine copies its
cache row (prompt + sampled tokens but the last, whose KV was never computed)
into a `PrefixStore`; a later prompt that continues a stored row (the next
turn of the episode, or a chat sent again with the answer and a new message
appended) starts from those keys and values and runs only its new tokens.

Exactness: the keys and values of position t depend only on tokens 0..t and the
weights, so a reused prefix gives the same logits as a full prefill up to
float rounding (tested against a teacher-forced forward). The engine drops the
store whenever the weights may have changed (`update_weights`, any other
holder of `model_lock`, a parameter's version counter moving, `sleep()`).

Entries are evicted least recently used first, within a byte budget; an entry
that is a prefix of a newer one is dropped (the newer one covers it).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(eq=False)
class PrefixEntry:
    """One cached row: its token ids and, per layer, keys and values `[kv_heads, len, head_dim]`."""

    tokens: np.ndarray
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    nbytes: int

    def __len__(self) -> int:
        return len(self.tokens)

    def prefix(self, n: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Keys and values of the first n tokens (views)."""
        return [k[:, :n] for k in self.keys], [v[:, :n] for v in self.values]


@dataclass(frozen=True)
class PrefixHit:
    """A prompt's match: the entry and how many of the prompt's first tokens it covers."""

    entry: PrefixEntry
    length: int


class PrefixStore:
    """An LRU of `PrefixEntry`s within `max_bytes` (0 turns reuse off)."""

    def __init__(self, max_bytes: int, min_tokens: int = 32):
        self.max_bytes = int(max_bytes)
        self.min_tokens = max(1, int(min_tokens))
        self._entries: collections.OrderedDict[int, PrefixEntry] = collections.OrderedDict()
        self._next = 0
        self.nbytes = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, prompt: Sequence[int]) -> PrefixHit | None:
        """The longest entry that is a prefix of `prompt` (a continuation of a cached row), if it
        has `min_tokens` or more; it then covers min(len(entry), len(prompt) - 1) tokens (the last
        prompt token always runs, for its logits).

        Only whole entries count, not a common head that then diverges (such as a system prompt
        shared by different tasks): which rows happen to be cached then never changes a result,
        so sending the same requests again gives bit-identical tokens and logprobs.
        """
        if not self._entries or len(prompt) <= self.min_tokens:
            return None
        ids = np.asarray(prompt, dtype=np.int64)
        best_key, best = None, 0
        for key, e in self._entries.items():
            n = len(e)
            if best < n <= len(ids) and np.array_equal(e.tokens, ids[:n]):
                best_key, best = key, n
        if best_key is None:
            return None
        self._entries.move_to_end(best_key)
        return PrefixHit(self._entries[best_key], min(best, len(ids) - 1))

    def put(self, tokens: Sequence[int], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Keep a row (keys/values per layer `[H, len(tokens), D]`, already copies)."""
        if len(tokens) < self.min_tokens:
            return
        nbytes = sum(t.numel() * t.element_size() for t in (*keys, *values))
        if nbytes > self.max_bytes:
            return
        ids = np.asarray(tokens, dtype=np.int64)
        for key, e in list(self._entries.items()):  # entries this one covers
            if len(e) <= len(ids) and np.array_equal(ids[: len(e)], e.tokens):
                self._drop(key)
        while self._entries and self.nbytes + nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
        self._entries[self._next] = PrefixEntry(ids, keys, values, nbytes)
        self._next += 1
        self.nbytes += nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def _drop(self, key: int) -> None:
        self.nbytes -= self._entries.pop(key).nbytes
