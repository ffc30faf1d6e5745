"""Fixtures for toolrl-rewards-text tests: real model completions and trajectories built from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolrl.types import Task, ToolCall, Trajectory

FIXTURES = Path(__file__).with_name("fixtures")


def make_trajectory(task_id: str, messages: list[dict], completion: str, *, tool_calls=(), malformed: int = 0,
                    sampled_tokens: int = 1, earlier: tuple[str, ...] = ()) -> Trajectory:
    """A trajectory whose last assistant message is `completion` (after `earlier` assistant turns)."""
    turns = [{"role": "assistant", "content": text} for text in (*earlier, completion)]
    calls = tuple(ToolCall(name=c["name"], arguments=c["arguments"]) for c in tool_calls)
    return Trajectory(
        task_id=task_id, sample_index=0, prompt_ids=(1,), response_ids=tuple(range(sampled_tokens)),
        loss_mask=(1,) * sampled_tokens, logprobs=(0.0,) * sampled_tokens,
        messages=(*messages, *turns), num_prompt_messages=len(messages), tool_calls=calls,
        malformed_tool_calls=malformed, num_turns=len(turns),
    )


def task(task_id: str, metadata=None, tools=()) -> Task:
    return Task(id=task_id, messages=({"role": "user", "content": "q"},), metadata=metadata or {}, tools=tuple(tools))


@pytest.fixture(scope="session")
def model_outputs():
    """The real completions in fixtures/completions.json: {group: [(trajectory, task, record), ...]}."""
    data = json.loads((FIXTURES / "completions.json").read_text())
    groups: dict[str, list] = {}
    for r in data["records"]:
        t = Task(id=r["id"], messages=tuple(r["messages"]), tools=tuple(r["tools"]), metadata=r["metadata"])
        traj = make_trajectory(r["id"], r["messages"], r["completion"], tool_calls=r["tool_calls"],
                               malformed=r["malformed_tool_calls"], sampled_tokens=r["num_sampled_tokens"])
        groups.setdefault(r["group"], []).append((traj, t, r))
    return groups


@pytest.fixture
def build():
    """`build.trajectory(...)` and `build.task(...)` for hand-written cases."""
    from types import SimpleNamespace

    return SimpleNamespace(trajectory=make_trajectory, task=task)
