"""Fixtures for toolrl-rewards-math tests: real model completions and trajectories built from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolrl.types import Task, Trajectory

FIXTURES = Path(__file__).with_name("fixtures")


def make_trajectory(task_id: str, messages: list[dict], completion: str, sample: int = 0) -> Trajectory:
    return Trajectory(
        task_id=task_id, sample_index=sample, prompt_ids=(1,), response_ids=(2,), loss_mask=(1,), logprobs=(0.0,),
        messages=(*messages, {"role": "assistant", "content": completion}), num_prompt_messages=len(messages),
    )


@pytest.fixture
def make_batch():
    """make_batch([(completion, answer), ...]) -> (trajectories, tasks) for hand-written cases."""

    def make(pairs, metadata_key="answer"):
        trajs, tasks = [], []
        for i, (completion, answer) in enumerate(pairs):
            msgs = [{"role": "user", "content": f"problem {i}"}]
            meta = {} if answer is None else {metadata_key: answer}
            tasks.append(Task(id=f"t{i}", messages=tuple(msgs), metadata=meta))
            trajs.append(make_trajectory(f"t{i}", msgs, completion))
        return trajs, tasks

    return make


@pytest.fixture(scope="session")
def model_outputs():
    """The real completions in fixtures/completions.json as (trajectories, tasks, records)."""
    data = json.loads((FIXTURES / "completions.json").read_text())
    trajs, tasks = [], []
    for r in data["records"]:
        tasks.append(Task(id=r["id"], messages=tuple(r["messages"]), metadata=r["metadata"]))
        trajs.append(make_trajectory(r["id"], r["messages"], r["completion"]))
    return trajs, tasks, data["records"]
