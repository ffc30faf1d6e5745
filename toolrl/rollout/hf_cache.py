"""A KV cache with row slots, for continuous batching with plain Hugging Face models.

Layout: per layer one preallocated buffer `[max_rows, kv_heads, capacity, head_dim]`.
Rows 0..n-1 are the running sequences. All rows are *right-aligned*: every
row's newest token sits in column `end - 1`, so one decode step writes column
`end` for all rows at once; row b's tokens occupy `[end - length_b, end)`, the
columns to their left are masked. Columns `[start, end)` are handed to the
attention, where `start = end - max(length)`.

Compared with `transformers.DynamicCache` (which concatenates the whole cache
every step) a decode step here writes one column in place; finished rows are
dropped by moving the surviving rows down, and new rows (prefilled apart)
are written into free slots right-aligned at `end`. Buffers are zero-filled
and pad positions are zeroed on insert, so masked columns never hold NaN.

The object is duck-typed to what HF decoder layers call: `update(key, value,
layer_idx)` and `get_seq_length()`; masks are passed as explicit 4-D tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_ALIGN = 64


def _round_up(x: int, k: int = _ALIGN) -> int:
    return (x + k - 1) // k * k


class SlotKVCache:
    """Right-aligned row slots over preallocated per-layer K/V buffers (see the module doc)."""

    is_compileable = False

    def __init__(self, num_layers: int, max_rows: int, device: torch.device | str, dtype: torch.dtype):
        self.num_layers = num_layers
        self.max_rows = max_rows
        self.device = torch.device(device)
        self.dtype = dtype
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.capacity = 0
        self.start = 0
        self.end = 0
        self.lengths: list[int] = []  # tokens in the cache per row
        self._len_t: torch.Tensor | None = None

    # ------------------------------------------------------------------ HF interface
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        q = key_states.shape[2]
        n, e = len(self.lengths), self.end
        k, v = self.keys[layer_idx], self.values[layer_idx]
        k[:n, :, e : e + q].copy_(key_states)
        v[:n, :, e : e + q].copy_(value_states)
        return k[:n, :, self.start : e + q], v[:n, :, self.start : e + q]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.end - self.start

    def __len__(self) -> int:
        return self.num_layers

    # ------------------------------------------------------------------ engine interface
    @property
    def num_rows(self) -> int:
        return len(self.lengths)

    @property
    def width(self) -> int:
        return self.end - self.start

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def prepare_decode(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Make room for one more column; return (4-D bool mask [n,1,1,W+1], position ids [n,1])."""
        if self.end >= self.capacity:
            # slide the rows back to column 0 if that frees enough room, else grow
            grow = self.width + _ALIGN > self.capacity // 2
            self._relayout(new_start=0, min_capacity=_round_up(2 * self.width + _ALIGN) if grow else 0)
        lengths = self._lengths_tensor()
        cols = torch.arange(self.start - self.end, 1, device=self.device)  # column index minus `end`
        mask = cols[None, :] >= -lengths[:, None]
        return mask[:, None, None, :], lengths[:, None]

    def advance(self, q: int = 1) -> None:
        """After a forward of `q` new tokens per row (1 for a decode step): columns `[end, end + q)`."""
        self.end += q
        self.lengths = [x + q for x in self.lengths]
        if self._len_t is not None:
            self._len_t += q  # on the device, no host round trip

    def prepare_extend(self, q: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask and positions for a forward of `q` new tokens per row (a prefill that continues
        cached rows): 4-D bool mask `[n, 1, q, W + q]` (row padding hidden, causal over the new
        columns) and position ids `[n, q]`. The buffers must have room (`load_rows(..., room=q)`)."""
        if self.end + q > self.capacity:
            raise ValueError(f"no room for {q} more columns (capacity {self.capacity}, end {self.end})")
        lengths = self._lengths_tensor()
        rel = torch.arange(self.start - self.end, q, device=self.device)  # key column minus `end`
        step = torch.arange(q, device=self.device)
        mask = (rel[None, None, :] >= -lengths[:, None, None]) & (rel[None, None, :] <= step[None, :, None])
        return mask[:, None], lengths[:, None] + step[None, :]

    def load_rows(self, rows: Sequence[tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]], room: int) -> None:
        """Start from rows given as per-layer `[H, L_i, D]` keys and values (cached prefixes),
        right-aligned, with `room` free columns after them. Only for an empty cache."""
        if self.num_rows:
            raise ValueError("load_rows needs an empty cache")
        if len(rows) > self.max_rows:
            raise ValueError(f"cache has {self.max_rows} row slots, {len(rows)} asked")
        lengths = [int(keys[0].shape[1]) for keys, _ in rows]
        width = max(lengths)
        heads, dim = rows[0][0][0].shape[0], rows[0][0][0].shape[2]
        cap = _round_up(width + room)
        self.keys = [torch.zeros(self.max_rows, heads, cap, dim, device=self.device, dtype=self.dtype)
                     for _ in range(self.num_layers)]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.capacity, self.start, self.end = cap, 0, width
        for i, ((keys, values), n) in enumerate(zip(rows, lengths)):
            for layer in range(self.num_layers):
                self.keys[layer][i, :, width - n : width] = keys[layer]
                self.values[layer][i, :, width - n : width] = values[layer]
        self.lengths = lengths
        self._len_t = None

    def rows(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Views of the running rows, per layer `[n, H, W, D]`, each row's tokens in its last columns."""
        n, s, e = self.num_rows, self.start, self.end
        return [k[:n, :, s:e] for k in self.keys], [v[:n, :, s:e] for v in self.values]

    def copy_row(self, row: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """A copy of one row's keys and values, per layer `[H, L, D]` (L = its length)."""
        n, e = self.lengths[row], self.end
        return ([k[row, :, e - n : e].clone() for k in self.keys],
                [v[row, :, e - n : e].clone() for v in self.values])

    def add_rows(self, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor], lengths: Sequence[int]) -> None:
        """Append rows from a left-padded prefill: per layer `[m, H, P, D]`, row i's tokens in the last lengths[i] columns."""
        m, heads, p, dim = keys[0].shape
        n = self.num_rows
        if n + m > self.max_rows:
            raise ValueError(f"cache has {self.max_rows} row slots, {n} used, {m} more asked")
        if not self.keys:
            cap = _round_up(p + 4 * _ALIGN)
            self.keys = [torch.zeros(self.max_rows, heads, cap, dim, device=self.device, dtype=self.dtype)
                         for _ in range(self.num_layers)]
            self.values = [torch.zeros_like(k) for k in self.keys]
            self.capacity = cap
        if n == 0:
            self.start = self.end = 0
            if p > self.capacity:
                self._relayout(new_start=0, min_capacity=_round_up(p + 4 * _ALIGN))
            self.start, self.end = 0, p
        elif self.end < p or self.end + 1 > self.capacity:
            # shift the running rows right so the new prompt fits left of `end`
            new_start = max(p - self.width, 0)
            self._relayout(new_start=new_start, min_capacity=_round_up(new_start + self.width + 4 * _ALIGN))
        lens = torch.tensor(list(lengths), device=self.device)
        valid = (torch.arange(p, device=self.device)[None, :] >= (p - lens)[:, None])[:, None, :, None]
        e = self.end
        for layer in range(self.num_layers):
            self.keys[layer][n : n + m, :, e - p : e] = torch.where(valid, keys[layer], 0)
            self.values[layer][n : n + m, :, e - p : e] = torch.where(valid, values[layer], 0)
            if e - p > self.start:  # columns left of the new prompt: stale data from old rows, zero them
                self.keys[layer][n : n + m, :, self.start : e - p] = 0
                self.values[layer][n : n + m, :, self.start : e - p] = 0
        self.lengths.extend(int(x) for x in lengths)
        self.start = self.end - max(self.lengths)
        self._len_t = None

    def remove_rows(self, remove: Sequence[int]) -> list[int]:
        """Drop the rows at positions `remove`; the last surviving rows move into the holes.

        Only the moved rows are copied (not the whole cache). Returns, for each new row
        position, the old position it came from (the caller reorders its own rows the same way).
        """
        gone = set(remove)
        n = self.num_rows
        order = [i for i in range(n) if i not in gone]
        k = len(order)
        if k == 0:
            self.lengths, self.start, self.end = [], 0, 0
            self._len_t = None
            return []
        holes = [i for i in range(k) if i in gone]
        movers = [i for i in range(k, n) if i not in gone]
        new_order = list(range(k))
        for h, m in zip(holes, movers):
            new_order[h] = m
        if holes:
            dst = torch.tensor(holes, device=self.device)
            src = torch.tensor(movers, device=self.device)
            s, e = self.start, self.end
            for layer in range(self.num_layers):
                for buf in (self.keys[layer], self.values[layer]):
                    buf[:, :, s:e].index_copy_(0, dst, buf[:, :, s:e].index_select(0, src))
        self.lengths = [self.lengths[i] for i in new_order]
        self.start = self.end - max(self.lengths)
        self._len_t = None
        return new_order

    def reset(self) -> None:
        """Drop every row and free the buffers."""
        self.keys, self.values = [], []
        self.capacity = self.start = self.end = 0
        self.lengths = []
        self._len_t = None

    # ------------------------------------------------------------------ internals
    def _lengths_tensor(self) -> torch.Tensor:
        if self._len_t is None:
            self._len_t = torch.tensor(self.lengths, device=self.device, dtype=torch.long)
        return self._len_t

    def _relayout(self, new_start: int, min_capacity: int) -> None:
        """Move columns [start, end) of the running rows to [new_start, new_start + width).

        In place when the buffers are large enough (stale columns keep finite old values, which
        the masks hide), else into larger zero-filled buffers.
        """
        n, s, w = self.num_rows, self.start, self.width
        need = max(min_capacity, _round_up(new_start + w + 1))
        if need <= self.capacity:
            if n and w and s != new_start:
                for layer in range(self.num_layers):
                    for buf in (self.keys[layer], self.values[layer]):
                        buf[:n, :, new_start : new_start + w] = buf[:n, :, s : s + w].clone()
        else:
            for layer in range(self.num_layers):
                for bufs in (self.keys, self.values):
                    old = bufs[layer]
                    new = torch.zeros(old.shape[0], old.shape[1], need, old.shape[3], device=old.device, dtype=old.dtype)
                    if n and w:
                        new[:n, :, new_start : new_start + w] = old[:n, :, s : s + w]
                    bufs[layer] = new
            self.capacity = need
        self.start, self.end = new_start, new_start + w
