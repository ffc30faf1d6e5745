"""The arith-tool suite: deterministic, schema-valid, knobs, errors."""

import json
import re

import pytest

from toolrl.errors import ToolrlError
from toolrl.types import Task
from toolrl_env_code.arith import DIFFICULTIES, GENERATORS, make_arith_tasks


def _dump(tasks):
    return [json.dumps(t.to_dict(), sort_keys=True) for t in tasks]


def test_same_seed_same_tasks():
    a = _dump(make_arith_tasks(50, seed=7, difficulty="medium"))
    assert a == _dump(make_arith_tasks(50, seed=7, difficulty="medium"))
    assert a != _dump(make_arith_tasks(50, seed=8, difficulty="medium"))
    assert a[:20] == _dump(make_arith_tasks(20, seed=7, difficulty="medium"))


@pytest.mark.parametrize("difficulty", list(DIFFICULTIES))
def test_tasks_follow_the_schema(difficulty):
    tasks = list(make_arith_tasks(60, seed=0, difficulty=difficulty))
    assert len({t.id for t in tasks}) == 60
    sources = set()
    for t in tasks:
        assert Task.from_dict(json.loads(json.dumps(t.to_dict()))) == t
        assert t.env == "python" and [tool["function"]["name"] for tool in t.tools] == ["python"]
        assert "<tool_call>" in t.messages[0]["content"] and "<answer>" in t.messages[0]["content"]
        assert t.metadata["answer"].strip() and t.metadata["answer_format"] == "answer_tag"
        sources.add(t.metadata["source"])
    assert sources == {f"reasoning_gym/{g}" for g in DIFFICULTIES[difficulty]}


def test_easy_is_multiplication_of_3_to_4_digit_numbers():
    for t in make_arith_tasks(40, seed=1, difficulty="easy"):
        a, b = map(int, re.search(r"(\d+) \* (\d+)", t.messages[-1]["content"]).groups())
        assert 100 <= a <= 9999 and 100 <= b <= 9999
        assert int(t.metadata["answer"]) == a * b


def test_generators_and_range_knobs():
    tasks = list(make_arith_tasks(30, seed=0, generators="chain_sum,gcd", min_terms=5, max_terms=5))
    assert {t.metadata["source"] for t in tasks} == {"reasoning_gym/chain_sum", "reasoning_gym/gcd"}
    for t in tasks:
        if t.metadata["source"].endswith("chain_sum"):
            expr = t.messages[-1]["content"].split(":")[1].rstrip("= ")
            assert len(re.findall(r"\d+", expr)) == 5
            assert eval(expr) == int(t.metadata["answer"])  # noqa: S307 - our own generated arithmetic
    (t,) = make_arith_tasks(1, seed=0, tool=False)
    assert t.tools == () and t.env is None and "<tool_call>" not in t.messages[0]["content"]
    assert "<answer>7006652</answer>" in t.messages[0]["content"]
    (t,) = make_arith_tasks(1, seed=0, answer_format="hash")
    assert "#### 7006652" in t.messages[0]["content"] and "<answer>" not in t.messages[0]["content"]
    assert t.metadata["answer_format"] == "hash" and "<tool_call>" in t.messages[0]["content"]


@pytest.mark.parametrize("kwargs, match", [
    ({"difficulty": "insane"}, "unknown difficulty"),
    ({"generators": "products,sudoku"}, "sudoku"),
    ({"generators": ""}, "empty"),
    ({"generators": "gsm_symbolic", "max_digits": 3}, "apply to none"),
    ({"min_digits": 0}, "min_digits"),
    ({"min_digits": 5, "max_digits": 3}, "rejected"),
    ({"tool": "maybe"}, "tool must be"),
    ({"answer_format": "boxed"}, "answer_format"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ToolrlError, match=match):
        list(make_arith_tasks(3, seed=0, **kwargs))


def test_every_listed_generator_produces_numeric_answers():
    for g in GENERATORS:
        for t in make_arith_tasks(5, seed=0, generators=g):
            assert re.fullmatch(r"-?\d+(\.\d+)?", t.metadata["answer"]), (g, t.metadata["answer"])


def test_shots_put_worked_examples_before_the_question():
    plain = list(make_arith_tasks(5, seed=4, shots=0))
    shot = list(make_arith_tasks(5, seed=4, shots=2))
    demos_seen = set()
    for p, t in zip(plain, shot):
        assert t.messages[-1] == p.messages[-1] and t.metadata == p.metadata  # same problems
        roles = [m["role"] for m in t.messages]
        assert roles == ["system"] + ["user", "assistant", "tool", "assistant"] * 2 + ["user"]
        for k in range(2):
            user, call, result, answer = t.messages[1 + 4 * k: 5 + 4 * k]
            a, b = map(int, re.search(r"(\d+) \* (\d+)", user["content"]).groups())
            assert f'"print({a} * {b})"' in call["content"] and result["content"] == str(a * b)
            assert answer["content"] == f"<answer>{a * b}</answer>"
            demos_seen.add((a, b))
    assert len(demos_seen) == 10  # different examples for every task
    assert [m["role"] for m in next(iter(make_arith_tasks(1, seed=4))).messages] == [
        "system", "user", "assistant", "tool", "assistant", "user"]  # one example by default
    (t,) = make_arith_tasks(1, seed=0, shots=1, tool=False, answer_format="hash")
    assert [m["role"] for m in t.messages] == ["system", "user", "assistant", "user"]
    assert t.messages[2]["content"].startswith("#### ")
    with pytest.raises(ToolrlError, match="shots"):
        list(make_arith_tasks(1, seed=0, shots=7))
