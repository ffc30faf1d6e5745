"""The `memory` suite: deterministic by seed, schema-valid, answerable from the notes, knobs and errors."""

import json

import pytest

from toolrl.errors import ToolrlError
from toolrl.types import Task
from toolrl_env_memory.env import parse_sessions
from toolrl_env_memory.suite import make_memory_tasks


def _dump(tasks):
    return [json.dumps(t.to_dict(), sort_keys=True) for t in tasks]


def test_same_seed_same_tasks_other_seed_other_tasks():
    a = _dump(make_memory_tasks(30, seed=3))
    assert a == _dump(make_memory_tasks(30, seed=3))
    assert a != _dump(make_memory_tasks(30, seed=4))
    assert a[:10] == _dump(make_memory_tasks(10, seed=3))  # a prefix does not depend on n


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
def test_tasks_are_valid_and_answerable_from_the_notes(difficulty):
    tasks = list(make_memory_tasks(40, seed=0, difficulty=difficulty))
    assert len({t.id for t in tasks}) == 40
    updated = 0
    for t in tasks:
        assert Task.from_dict(json.loads(json.dumps(t.to_dict()))) == t
        assert t.env == "memory" and {tool["function"]["name"] for tool in t.tools} == {"recall", "remember"}
        notes = {m.id: m for m in parse_sessions(t.env_args["sessions"], t.id)}
        meta = t.metadata
        assert meta["relevant_memory_ids"] and all(i in notes for i in meta["relevant_memory_ids"])
        for rid in meta["relevant_memory_ids"]:
            assert meta["answer"] in notes[rid].text
        assert meta["answer"] not in t.messages[-1]["content"]  # the request never names the fact
        assert meta["keywords"] == [meta["answer"]] and meta["answer"] in meta["reference"]
        if meta["updated"]:
            updated += 1
            (rid,) = meta["relevant_memory_ids"]
            # the update comes in a later session than the first statement of the fact
            assert notes[rid].session > min(m.session for m in notes.values())
    if difficulty == "easy":
        assert updated == 0
    if difficulty == "hard":
        assert updated > 5


def test_knobs_override_the_preset():
    (t,) = make_memory_tasks(1, seed=1, difficulty="easy", sessions=4, facts=6, fillers=0, k=5)
    assert len(t.env_args["sessions"]) == 4
    assert sum(len(s["notes"]) for s in t.env_args["sessions"]) == 6
    assert t.env_args["k"] == 5


@pytest.mark.parametrize("kwargs, match", [
    ({"difficulty": "extreme"}, "difficulty"),
    ({"facts": 0}, "facts"),
    ({"facts": 99}, "facts"),
    ({"update_prob": 1.5}, "update_prob"),
    ({"sessions": 0}, "sessions"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ToolrlError, match=match):
        list(make_memory_tasks(2, seed=0, **kwargs))
