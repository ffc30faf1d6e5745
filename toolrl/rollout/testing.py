"""Helpers for testing code built on the agent loop (environments, rewards, trainers).

- `teacher_forced_logprobs(model, prompt_ids, response_ids, temperature)`: the
  per-token log-probabilities of a response under one forward pass, computed
  the way the rollout records them (log softmax of logits / T; T = 1 for
  greedy). Compare with `Trajectory.logprobs` where `loss_mask` is 1.
- `ForcedTurnsBackend`: wraps a real backend and, for the turns you choose,
  returns text you give instead of sampling: to make a small model call a
  tool (or write a malformed call) on demand. The forced ids are scored by
  the real model (teacher-forced), so they carry honest logprobs; every other
  turn is sampled by the wrapped backend as usual.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import torch

from toolrl.rollout.base import GenerationRequest, GenerationResult, StreamChunk


def teacher_forced_logprobs(model: Any, prompt_ids: Sequence[int], response_ids: Sequence[int],
                            temperature: float = 1.0) -> list[float]:
    """log softmax(logits / T)[token] for every response token, from one forward pass (float32)."""
    if not response_ids:
        return []
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids) + list(response_ids)], device=device)
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0].float()
    t = temperature if temperature > 0 else 1.0
    logits = logits[len(prompt_ids) - 1 : -1] / t
    target = torch.tensor(list(response_ids), device=device)
    return torch.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1).tolist()


ForceFn = Callable[[GenerationRequest], "str | None"]


class ForcedTurnsBackend:
    """A real backend whose chosen turns are replaced by given text (see the module doc).

    Args:
        backend: the backend that samples every other turn (its `.model` scores forced turns).
        tokenizer: encodes the forced text.
        force: `force(request) -> text | None`; the agent loop's request ids read
            "<task id>#<sample>/t<turn>", so `turn_of(request)` tells the turn.
        end_of_turn_id: appended to forced text (the turn then ends as if the model stopped).
    """

    def __init__(self, backend: Any, tokenizer: Any, force: ForceFn, end_of_turn_id: int):
        self.backend = backend
        self.tokenizer = tokenizer
        self.force = force
        self.end_of_turn_id = end_of_turn_id
        self.name = f"forced({getattr(backend, 'name', '?')})"
        self.forced_requests: list[str] = []

    def _forced(self, request: GenerationRequest) -> GenerationResult | None:
        text = self.force(request)
        if text is None:
            return None
        ids = list(self.tokenizer.encode(text, add_special_tokens=False)) + [self.end_of_turn_id]
        finish = "stop"
        if len(ids) > request.sampling.max_tokens:  # cut like a real backend would
            ids, finish = ids[: request.sampling.max_tokens], "length"
        lps = teacher_forced_logprobs(self.backend.model, request.prompt_ids, ids, request.sampling.temperature)
        self.forced_requests.append(request.request_id)
        return GenerationResult(tuple(ids), tuple(lps), finish, request.request_id, len(request.prompt_ids))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [self._forced(r) or self.backend.generate([r])[0] for r in requests]

    async def agenerate(self, request: GenerationRequest) -> GenerationResult:
        forced = self._forced(request)
        return forced if forced is not None else await self.backend.agenerate(request)

    async def astream(self, request: GenerationRequest) -> AsyncIterator[StreamChunk]:
        result = await self.agenerate(request)
        yield StreamChunk(result.token_ids, result.logprobs, result.finish_reason)

    def update_weights(self, state_dict: Mapping[str, Any]) -> None:
        self.backend.update_weights(state_dict)

    def stats(self) -> Mapping[str, float]:
        return self.backend.stats()

    def sleep(self) -> None:
        self.backend.sleep()

    def wake(self) -> None:
        self.backend.wake()

    def close(self) -> None:
        self.backend.close()


def turn_of(request: GenerationRequest) -> int:
    """The turn number (1-based) of an agent-loop request, from its request id."""
    return int(request.request_id.rsplit("/t", 1)[1])
