"""Fixtures for toolrl-rewards-code tests: real model completions and trajectories built from them."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from toolrl.types import Task, Trajectory

FIXTURES = Path(__file__).with_name("fixtures")


def make_trajectory(task_id: str, completion: str, sample: int = 0, infra_error: bool = False) -> Trajectory:
    messages = ({"role": "user", "content": f"solve {task_id}"}, {"role": "assistant", "content": completion})
    return Trajectory(task_id=task_id, sample_index=sample, prompt_ids=(1,), response_ids=(2,), loss_mask=(1,),
                      logprobs=(0.0,), messages=messages, num_prompt_messages=1, infra_error=infra_error)


def make_task(task_id: str, metadata: dict) -> Task:
    return Task(id=task_id, messages=({"role": "user", "content": f"solve {task_id}"},), metadata=metadata)


@pytest.fixture
def build():
    """`build.trajectory(task_id, completion)` and `build.task(task_id, metadata)`."""
    return SimpleNamespace(trajectory=make_trajectory, task=make_task)


@pytest.fixture(scope="session")
def model_outputs():
    """The real completions in fixtures/completions.json as (trajectories, tasks, records)."""
    data = json.loads((FIXTURES / "completions.json").read_text())
    trajs, tasks = [], []
    for r in data["records"]:
        tasks.append(Task(id=r["id"], messages=tuple(r["messages"]), metadata=r["metadata"]))
        trajs.append(make_trajectory(r["id"], r["completion"]))
    return trajs, tasks, data["records"]
