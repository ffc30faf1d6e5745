"""Teacher-forced forward passes over a TrainBatch: per-token logprobs, entropy, values."""

from __future__ import annotations

from typing import Any

import torch

from toolrl.algorithms.losses import entropy_from_logits, logprobs_from_logits
from toolrl.trainer.batch import TrainBatch


def response_logits(model: Any, batch: TrainBatch, temperature: float = 1.0) -> torch.Tensor:
    """`[B, T, V]` float32 logits that predict each response token (divided by the sampling temperature)."""
    T = batch.response_width
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=T + 1,
        use_cache=False,
    )
    logits = out.logits[:, :-1, :].float()  # position P-1+j predicts response token j
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    return logits


def response_logprobs(
    model: Any, batch: TrainBatch, temperature: float = 1.0, *, with_entropy: bool = False, entropy_grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probabilities of the response ids `[B, T]`, and the entropy `[B, T]` if asked.

    The entropy is computed without gradient unless `entropy_grad` (an entropy
    bonus needs it; logging does not, and skipping it saves a `[B, T, V]` graph).
    """
    logits = response_logits(model, batch, temperature)
    logprobs = logprobs_from_logits(logits, batch.response_ids)
    entropy = None
    if with_entropy:
        if entropy_grad:
            entropy = entropy_from_logits(logits)
        else:
            with torch.no_grad():
                entropy = entropy_from_logits(logits.detach())
    return logprobs, entropy


@torch.no_grad()
def batched_logprobs(model: Any, batch: TrainBatch, micro_batch_size: int, temperature: float = 1.0) -> torch.Tensor:
    """`response_logprobs` over the whole batch in micro-batches, without gradient, on the model's device."""
    device = next(model.parameters()).device
    parts = []
    for micro in batch.split(micro_batch_size):
        lp, _ = response_logprobs(model, micro.to(device), temperature)
        parts.append(lp.cpu())
    return torch.cat(parts, 0) * batch.response_mask


def critic_values(critic: Any, batch: TrainBatch) -> torch.Tensor:
    """`[B, T]` values of the states that precede each response token."""
    P, T = batch.prompt_width, batch.response_width
    v = critic(batch.input_ids, batch.attention_mask, batch.position_ids)
    return v[:, P - 1 : P + T - 1].float()


@torch.no_grad()
def batched_values(critic: Any, batch: TrainBatch, micro_batch_size: int) -> torch.Tensor:
    device = next(critic.parameters()).device
    parts = [critic_values(critic, m.to(device)).cpu() for m in batch.split(micro_batch_size)]
    return torch.cat(parts, 0) * batch.response_mask
