"""The in-process BFCL world: call parsing, allowed functions, snapshots, ground-truth outcomes."""

import json

import pytest

from toolrl_env_bfcl.bfcl_data import load_category
from toolrl_env_bfcl.multi_turn import World, ground_truth_outcome, parse_call

FS_CONFIG = {"GorillaFileSystem": {"root": {"alice": {"type": "directory", "contents": {
    "notes.txt": {"type": "file", "content": "hello world"}, "docs": {"type": "directory", "contents": {}}}}}}}


def test_parse_call():
    assert parse_call("mv(source='a.txt', destination='docs')") == ("mv", [], {"source": "a.txt", "destination": "docs"})
    assert parse_call("sort('final_report.pdf')") == ("sort", ["final_report.pdf"], {})
    assert parse_call("MathAPI.add(a=1, b=[2, 3])") == ("add", [], {"a": 1, "b": [2, 3]})
    for bad in ("mv(", "x = 1", "__import__('os').system('ls')"):
        with pytest.raises(ValueError):
            parse_call(bad)


def test_world_runs_calls_and_snapshots_state():
    world = World(["GorillaFileSystem"], FS_CONFIG)
    before = world.snapshot()
    assert world.call("ls", (), {}) == {"current_directory_content": ["notes.txt", "docs"]}
    world.call("mv", (), {"source": "notes.txt", "destination": "docs"})
    after = world.snapshot()
    assert after != before
    docs = after["GorillaFileSystem"]["root"]["contents"]["docs"]
    assert docs["contents"]["notes.txt"] == {"__class__": "File", "name": "notes.txt", "content": "hello world"}
    assert "parent" not in docs  # the back-reference to the enclosing directory is left out
    json.dumps(after)  # plain JSON data


def test_world_refuses_functions_not_offered():
    world = World(["GorillaFileSystem"], FS_CONFIG, functions=["ls", "cd"])
    assert world.functions == ["cd", "ls"]
    with pytest.raises(ValueError, match="unknown function 'rm'"):
        world.call("rm", (), {"file_name": "notes.txt"})
    with pytest.raises(ValueError, match="unknown function '_load_scenario'"):
        world.call("_load_scenario", (), {})
    with pytest.raises(TypeError, match="ls:"):
        world.call("ls", (), {"colour": "red"})


def test_ground_truth_outcome_of_every_multi_turn_entry_is_reproducible():
    entry = load_category("multi_turn")[0]
    env_args = {"involved_classes": entry["involved_classes"], "initial_config": entry["initial_config"],
                "replay": entry["ground_truth"][0]}
    a = ground_truth_outcome(env_args, entry["ground_truth"][1])
    b = ground_truth_outcome(env_args, entry["ground_truth"][1])
    assert a == b and a[1]
