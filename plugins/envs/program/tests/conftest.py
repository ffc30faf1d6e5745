"""Fixtures of toolrl-env-program's tests: the real SmolLM2 on the hf backend, a spy on what it sampled,
and the `program` environment registered in a fresh plugin manager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import torch


class SpyBackend:
    """The real backend, remembering every request it was given and every result it returned
    (only to compare the trajectory with what the engine really did; it changes nothing)."""

    def __init__(self, backend: Any):
        self.backend = backend
        self.name = "spy"
        self.calls: list[tuple[Any, Any]] = []

    async def agenerate(self, request):
        result = await self.backend.agenerate(request)
        self.calls.append((request, result))
        return result

    async def astream(self, request) -> AsyncIterator[Any]:
        from toolrl.rollout.base import GenerationResult

        ids, lps, finish = [], [], None
        try:
            async for chunk in self.backend.astream(request):
                ids += chunk.token_ids
                lps += chunk.logprobs
                finish = chunk.finish_reason or finish
                yield chunk
        finally:
            self.calls.append((request, GenerationResult(tuple(ids), tuple(lps), finish or "abort")))

    def stats(self):
        return self.backend.stats()


@pytest.fixture(scope="module")
def smol(smollm2_path):
    from toolrl.rollout.base import BackendSettings
    from toolrl.rollout.hf_backend import HFBackend

    torch.set_num_threads(2)
    backend = HFBackend(BackendSettings(model_path=str(smollm2_path), device="cpu", max_batch_size=8))
    yield backend
    backend.close()


@pytest.fixture
def spy(smol):
    return SpyBackend(smol)


@pytest.fixture
def program_env(plugin_manager):
    import toolrl_env_program.plugin

    plugin_manager.register(toolrl_env_program.plugin, name="env_program")
    return plugin_manager
