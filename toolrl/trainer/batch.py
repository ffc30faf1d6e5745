"""The training batch: trajectories as padded tensors.

Layout (verl's): prompts left-padded to a common width P, responses
right-padded to a common width T, so every sample's response starts at the same
column and one slice `[:, P-1 : P+T-1]` of the model's output predicts all
response tokens. Position ids count real tokens only, so padding changes
nothing for the model.

    input_ids       [B, P+T]   pad.. prompt | response ..pad
    attention_mask  [B, P+T]
    position_ids    [B, P+T]
    response_ids    [B, T]
    response_mask   [B, T]     1 on sampled tokens of included samples (tool
                               tokens, padding and excluded samples are 0)

Per-token tensors computed along the way (`old_logprobs`, `ref_logprobs`,
`values`, `advantages`, `returns`, `rollout_logprobs`) live in `extras`, all `[B, T]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import chain

import numpy as np
import torch

from toolrl.types import Trajectory


@dataclass
class TrainBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    prompt_width: int
    group_ids: list[str]
    valid: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def response_width(self) -> int:
        return int(self.response_ids.shape[1])

    @property
    def num_tokens(self) -> int:
        """Masked (trained-on) tokens."""
        return int(self.response_mask.sum())

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.extras[key]

    def get(self, key: str) -> torch.Tensor | None:
        return self.extras.get(key)

    def select(self, index: Sequence[int] | torch.Tensor) -> TrainBatch:
        """The samples at `index`, in that order (padding columns are kept)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        return replace(
            self,
            input_ids=self.input_ids[idx],
            attention_mask=self.attention_mask[idx],
            position_ids=self.position_ids[idx],
            response_ids=self.response_ids[idx],
            response_mask=self.response_mask[idx],
            group_ids=[self.group_ids[i] for i in idx.tolist()],
            valid=self.valid[idx],
            extras={k: v[idx] for k, v in self.extras.items()},
        )

    def split(self, size: int) -> list[TrainBatch]:
        return [self.select(range(i, min(i + size, len(self)))) for i in range(0, len(self), size)]

    def to(self, device: torch.device | str) -> TrainBatch:
        return replace(
            self,
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            position_ids=self.position_ids.to(device),
            response_ids=self.response_ids.to(device),
            response_mask=self.response_mask.to(device),
            valid=self.valid.to(device),
            extras={k: v.to(device) for k, v in self.extras.items()},
        )

    def trimmed(self, multiple: int = 1) -> TrainBatch:
        """Drop padding columns that no sample uses (after `select`, a micro-batch is often narrower).

        `multiple` > 1 rounds the prompt and response widths up to multiples of it, adding padding columns
        where needed, so that micro-batches come in few shapes (layers replayed as CUDA graphs record one
        graph per shape: `trainer.compile_mode=reduce-overhead`).
        """
        prompt_len = (self.attention_mask[:, : self.prompt_width]).sum(-1)
        resp_len = (self.attention_mask[:, self.prompt_width :]).sum(-1)
        p = int(prompt_len.max()) if len(self) else 0
        t = max(int(resp_len.max()) if len(self) else 0, 1)
        if multiple > 1:
            p, t = -(-p // multiple) * multiple, -(-t // multiple) * multiple
        b = self._widened(max(p - self.prompt_width, 0), max(t - self.response_width, 0))
        lo, hi = b.prompt_width - p, b.prompt_width + t
        return replace(
            b,
            input_ids=b.input_ids[:, lo:hi],
            attention_mask=b.attention_mask[:, lo:hi],
            position_ids=b.position_ids[:, lo:hi],
            response_ids=b.response_ids[:, :t],
            response_mask=b.response_mask[:, :t],
            prompt_width=p,
            extras={k: v[:, :t] for k, v in b.extras.items()},
        )

    def _widened(self, left: int, right: int) -> TrainBatch:
        """`left` more padding columns before the prompts and `right` more after the responses (masked out;
        position ids as build_batch gives padding: 0 on the left, the last position repeated on the right)."""
        if not (left or right):
            return self
        pad = torch.nn.functional.pad
        pos = self.position_ids
        return replace(
            self,
            input_ids=pad(self.input_ids, (left, right)),
            attention_mask=pad(self.attention_mask, (left, right)),
            position_ids=torch.cat([pos.new_zeros(len(self), left), pos, pos[:, -1:].expand(-1, right)], dim=1),
            response_ids=pad(self.response_ids, (0, right)),
            response_mask=pad(self.response_mask, (0, right)),
            prompt_width=self.prompt_width + left,
            extras={k: pad(v, (0, right)) for k, v in self.extras.items()},
        )


def build_batch(
    trajectories: Sequence[Trajectory],
    group_ids: Sequence[str],
    valid: Sequence[bool],
    pad_token_id: int,
) -> TrainBatch:
    """Pad trajectories into a TrainBatch.

    Args:
        trajectories: the step's samples.
        group_ids: one id per sample; samples of one prompt share it.
        valid: False for excluded samples (reward None, infrastructure error):
            their mask is all 0, so they add nothing to the loss.
        pad_token_id: id used for padding (never attended, never trained on).
    """
    B = len(trajectories)
    prompt_lens = torch.tensor([len(t.prompt_ids) for t in trajectories], dtype=torch.long)
    resp_lens = torch.tensor([len(t.response_ids) for t in trajectories], dtype=torch.long)
    P = int(prompt_lens.max()) if B else 0
    T = max(int(resp_lens.max()) if B else 0, 1)
    # one tensor per field for the whole batch (not one per sample: this runs on the trainer thread, beside an
    # overlapped rollout in asynchronous mode), written through masks whose row-major order is the samples' order
    cols_p, cols_t = torch.arange(P), torch.arange(T)
    in_prompt = cols_p >= (P - prompt_lens)[:, None]  # [B, P]: prompts end at column P
    in_resp = cols_t < resp_lens[:, None]  # [B, T]
    input_ids = torch.full((B, P + T), pad_token_id, dtype=torch.long)
    attention = torch.zeros((B, P + T), dtype=torch.long)
    response_mask = torch.zeros((B, T), dtype=torch.float32)
    rollout_lp = torch.zeros((B, T), dtype=torch.float32)
    input_ids[:, :P][in_prompt] = _flat([t.prompt_ids for t in trajectories], np.int64)
    input_ids[:, P:][in_resp] = _flat([t.response_ids for t in trajectories], np.int64)
    attention[:, :P] = in_prompt
    attention[:, P:] = in_resp
    rollout_lp[in_resp] = _flat([t.logprobs for t in trajectories], np.float32)
    response_mask[in_resp] = _flat([t.loss_mask for t in trajectories], np.float32)
    valid_rows = torch.tensor(list(valid), dtype=torch.bool)
    response_mask[~valid_rows] = 0.0  # excluded samples train on nothing
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    return TrainBatch(
        input_ids=input_ids,
        attention_mask=attention,
        position_ids=position_ids,
        response_ids=input_ids[:, P:].clone(),
        response_mask=response_mask,
        prompt_width=P,
        group_ids=list(group_ids),
        valid=valid_rows,
        extras={"rollout_logprobs": rollout_lp},
    )


def _flat(rows: Sequence[Sequence[float]], dtype: type) -> torch.Tensor:
    """The rows concatenated into one tensor (numpy reads Python numbers about 3x faster than torch.tensor)."""
    return torch.from_numpy(np.fromiter(chain.from_iterable(rows), dtype=dtype, count=sum(map(len, rows))))
