"""One rollout job for several steps' batches (trainer.async_rollouts.steps_per_rollout): `run_rollouts` with a
step seed per task sends the engine exactly the requests (prompt, seed) that separate calls per step would, all
in flight together, and returns the trajectories in task-major order.

The backend is the real hf backend with a tiny random model, wrapped to record each request and how many were
in flight at once."""

from __future__ import annotations

import asyncio

import pytest

from toolrl.config import load_config
from toolrl.trainer.roles import RolloutJob
from toolrl.trainer.rollout import run_rollouts, seed_runs
from toolrl.types import Task


class RecordingBackend:
    """Delegates to a real backend; records (prompt ids, seed) of every request and the most in flight."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.requests: list[tuple[tuple[int, ...], int | None]] = []
        self.in_flight = self.most_in_flight = 0

    async def agenerate(self, request):
        self.requests.append((tuple(request.prompt_ids), request.sampling.seed))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01)  # let every episode of the job submit before any finishes
            return await self.inner.agenerate(request)
        finally:
            self.in_flight -= 1

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


def _tasks(prefix: str, k: int) -> list[Task]:
    return [Task(id=f"{prefix}{i}", messages=({"role": "user", "content": f"Say {prefix} {i}."},), env=None)
            for i in range(k)]


@pytest.fixture
def cfg():
    return load_config(None, ["rollout.max_new_tokens=4", "rollout.max_turns=1", "rollout.n=2",
                              "rollout.temperature=1.0", "trainer.seed=3"])


def test_per_task_seeds_send_the_requests_of_separate_steps_in_one_batch(tiny_backend, cfg):
    a, b = _tasks("a", 2), _tasks("b", 3)
    separate = RecordingBackend(tiny_backend)
    ta = run_rollouts(separate, tiny_backend.tokenizer, a, 2, cfg, seed=101)
    tb = run_rollouts(separate, tiny_backend.tokenizer, b, 2, cfg, seed=202)
    merged = RecordingBackend(tiny_backend)
    both = run_rollouts(merged, tiny_backend.tokenizer, a + b, 2, cfg, seed=[101] * 2 + [202] * 3)
    assert sorted(merged.requests) == sorted(separate.requests)  # the same prompts with the same seeds
    assert len({s for _, s in merged.requests}) == 10  # every sample its own seed
    assert merged.most_in_flight == 10 and separate.most_in_flight == 6  # one batch of both steps' episodes
    assert [(t.task_id, t.sample_index) for t in both] == [(t.task_id, t.sample_index) for t in ta + tb]


def test_seed_runs_and_job_seeds():
    assert seed_runs([7, 7, 9, 9, 9, 7], 6) == [(7, 0, 2), (9, 2, 5), (7, 5, 6)]
    assert seed_runs([], 0) == []
    with pytest.raises(ValueError, match="3 task seeds for 2 tasks"):
        seed_runs([1, 2, 3], 2)
    tasks = tuple(_tasks("t", 2))
    assert RolloutJob(tasks, 2, 5).seeds() == 5
    assert RolloutJob(tasks, 2, 5, task_seeds=(5, 6)).seeds() == (5, 6)
    with pytest.raises(ValueError, match="2 tasks has 1 task seeds"):
        RolloutJob(tasks, 2, 5, task_seeds=(5,)).seeds()
