"""Teacher-forced forward passes over a TrainBatch: per-token logprobs, entropy, values."""

from __future__ import annotations

from typing import Any

import torch

from toolrl.algorithms.losses import entropy_from_logits, logprobs_from_logits
from toolrl.trainer.batch import TrainBatch


def prompt_runs(batch: TrainBatch) -> list[int] | None:
    """Lengths of the runs of consecutive samples that share a prompt (a GRPO group is one run).

    None when no run is longer than 1 (nothing to share).
    """
    P = batch.prompt_width
    ids, mask = batch.input_ids[:, :P], batch.attention_mask[:, :P]
    runs, start = [], 0
    for i in range(1, len(batch) + 1):
        if i == len(batch) or not (torch.equal(ids[i], ids[start]) and torch.equal(mask[i], mask[start])):
            runs.append(i - start)
            start = i
    return runs if runs and max(runs) > 1 else None


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
    cache = getattr(out, "past_key_values", None)
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
                 position_ids=batch.position_ids[:, P : P + T - 1], past_key_values=cache, use_cache=True)
    return torch.cat([first_out, rest.last_hidden_state if hidden else rest.logits], dim=1)


def response_logprobs(
    model: Any, batch: TrainBatch, temperature: float = 1.0, *, with_entropy: bool = False, entropy_grad: bool = False,
    share_prompt: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probabilities of the response ids `[B, T]`, and the entropy `[B, T]` if asked.

    The entropy is computed without gradient unless `entropy_grad` (an entropy
    bonus needs it; logging does not, and skipping it saves a `[B, T, V]` graph).
    """
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


@torch.no_grad()
def batched_logprobs(model: Any, batch: TrainBatch, micro_batch_size: int, temperature: float = 1.0,
                     share_prompt: bool = True) -> torch.Tensor:
    """`response_logprobs` over the whole batch in micro-batches, without gradient, on the model's device."""
    device = next(model.parameters()).device
    parts = []
    for micro in batch.split(micro_batch_size):
        lp, _ = response_logprobs(model, micro.trimmed().to(device), temperature, share_prompt=share_prompt)
        lp = torch.nn.functional.pad(lp, (0, batch.response_width - lp.shape[1]))
        parts.append(lp.cpu())
    return torch.cat(parts, 0) * batch.response_mask


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
        v = critic_values(critic, micro.trimmed().to(device), share_prompt).cpu()
        parts.append(torch.nn.functional.pad(v, (0, batch.response_width - v.shape[1])))
    return torch.cat(parts, 0) * batch.response_mask
