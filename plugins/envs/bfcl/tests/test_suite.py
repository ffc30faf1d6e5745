"""The bfcl suite: deterministic, schema-valid, disjoint splits, multi-turn history, errors."""

import json

import pytest

from toolrl.errors import ToolrlError
from toolrl.types import Task
from toolrl_env_bfcl.bfcl_data import CATEGORIES, load_category
from toolrl_env_bfcl.suite import make_bfcl_tasks


def _dump(tasks):
    return [json.dumps(t.to_dict(), sort_keys=True) for t in tasks]


def test_same_seed_same_tasks():
    a = _dump(make_bfcl_tasks(60, seed=1))
    assert a == _dump(make_bfcl_tasks(60, seed=1)) != _dump(make_bfcl_tasks(60, seed=2))
    assert a[:10] == _dump(make_bfcl_tasks(10, seed=1))


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_category_makes_valid_tasks(category):
    tasks = list(make_bfcl_tasks(8, seed=0, categories=category, split="all"))
    for t in tasks:
        assert Task.from_dict(json.loads(json.dumps(t.to_dict()))) == t
        assert t.env == "bfcl" and t.metadata["category"] == category and t.tools
        for tool in t.tools:
            assert tool["function"]["parameters"].get("type") == "object"
        assert t.env_args["mode"] == ("multi_turn" if category == "multi_turn" else "ast")


def test_schemas_use_json_schema_types():
    for t in make_bfcl_tasks(200, seed=0, categories="simple,parallel_multiple,multi_turn", split="all"):
        text = json.dumps([tool["function"]["parameters"] for tool in t.tools])
        for bfcl_type in ('"type": "dict"', '"type": "float"', '"type": "tuple"', '"type": "any"'):
            assert bfcl_type not in text


def test_splits_are_disjoint_and_cover_everything():
    n_simple = len(load_category("simple"))
    train = {t.metadata["bfcl_id"] for t in make_bfcl_tasks(320, seed=0, categories="simple", split="train")}
    with pytest.raises(ToolrlError, match="only"):
        list(make_bfcl_tasks(n_simple, seed=0, categories="simple", split="train"))
    n_test = n_simple - len(list(make_bfcl_tasks(320, seed=0, categories="simple", split="train")))
    test = {t.metadata["bfcl_id"] for t in make_bfcl_tasks(60, seed=0, categories="simple", split="test")}
    assert not train & test and 60 <= n_test
    # multi-turn: all turns of a conversation are on the same side
    mt_train = {t.metadata["bfcl_id"] for t in make_bfcl_tasks(400, seed=0, categories="multi_turn", split="train")}
    mt_test = {t.metadata["bfcl_id"] for t in make_bfcl_tasks(100, seed=0, categories="multi_turn", split="test")}
    assert not mt_train & mt_test


def test_multi_turn_history_shows_earlier_turns_with_their_calls_and_results():
    tasks = list(make_bfcl_tasks(734, seed=0, categories="multi_turn", split="all"))
    entry = load_category("multi_turn")[0]
    by_turn = {t.metadata["turn"]: t for t in tasks if t.metadata["bfcl_id"] == entry["id"]}
    assert sorted(by_turn) == list(range(len(entry["question"])))
    t0, t1 = by_turn[0], by_turn[1]
    assert [m["role"] for m in t0.messages] == ["system", "user"] and t0.env_args["replay"] == []
    assert t1.env_args["replay"] == entry["ground_truth"][0]
    roles = [m["role"] for m in t1.messages]
    assert roles == ["system", "user", "assistant"] + ["tool"] * len(entry["ground_truth"][0]) + ["user"]
    assert t1.messages[2]["content"].count("<tool_call>") == len(entry["ground_truth"][0])
    assert t1.messages[-1]["content"] == entry["question"][1][0]["content"]
    assert t1.metadata["ground_truth"] == entry["ground_truth"][1]
    excluded = set(entry.get("excluded_function") or ())
    assert excluded and not excluded & {tool["function"]["name"] for tool in t1.tools}
    firsts = list(make_bfcl_tasks(50, seed=0, categories="multi_turn", turns="first"))
    assert {t.metadata["turn"] for t in firsts} == {0}


@pytest.mark.parametrize("kwargs, match", [
    ({"categories": "simple,chess"}, "chess"),
    ({"categories": ""}, "categories"),
    ({"split": "dev"}, "bad split"),
    ({"turns": "last"}, "bad turns"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ToolrlError, match=match):
        list(make_bfcl_tasks(3, seed=0, **kwargs))


def test_too_many_tasks_names_the_limit():
    with pytest.raises(ToolrlError, match=r"only \d+ BFCL tasks") as exc:
        list(make_bfcl_tasks(10_000, seed=0, categories="parallel", split="all"))
    assert "--n" in exc.value.fix
