"""gsm8k_exact and math_equiv: on real model completions (fixtures/completions.json) and edge cases."""

from __future__ import annotations

import inspect
import json

import pytest

from toolrl import plugins
from toolrl.errors import RewardError
from toolrl.rewards import compute_rewards, prepare_rewards
from toolrl_rewards_math import gsm8k_exact, math_equiv
from toolrl_rewards_math import plugin as math_plugin

# Hand-checked labels for fixtures/completions.json: each completion was read and scored by hand.
# id -> (gsm8k_exact strict, gsm8k_exact flexible, math_equiv), with format_score=0.1 for gsm8k_exact
# (0.1 = an answer was found but is wrong, 0.0 = no answer found) and math_equiv's defaults.
EXPECTED: dict[str, tuple[float, float, float]] = {
    "gsm_symbolic-s7-0": (0.0, 0.1, 0.0),        # cut off mid-calculation, no ####; last number 0.25
    "gsm_symbolic-s7-1": (0.0, 0.1, 0.0),        # "#### Olivia spent ... 15 minutes": no number right after ####
    "gsm_symbolic-s7-2": (0.0, 1.0, 1.0),        # \boxed{48}, correct, but no ####
    "gsm_symbolic-s7-3": (0.0, 0.1, 0.0),        # \boxed{192}, gold 96
    "basic_arithmetic-s5-0": (0.0, 0.1, 0.0),    # cut off; last number 6312000
    "basic_arithmetic-s5-1": (0.0, 0.1, 0.0),    # \boxed{-12}, gold -27
    "simple_equations-s4-0": (0.0, 1.0, 1.0),    # \boxed{71}
    "simple_equations-s4-1": (0.0, 1.0, 1.0),    # \boxed{60}
    "fraction_simplification-s3-0": (0.0, 0.1, 0.0),  # cut off in a factorisation
    "fraction_simplification-s3-1": (0.0, 0.1, 0.0),  # \boxed{\dfrac{169}{217}}, gold 242/311
    "chain_sum-s2-0": (0.0, 1.0, 1.0),           # <answer>6</answer>
    "chain_sum-s2-1": (0.0, 1.0, 1.0),           # <answer>214</answer>
    "gsm_symbolic-s8-0": (0.0, 0.1, 0.0),        # <answer>10</answer>, gold 735
    "gsm_symbolic-s8-1": (0.0, 0.1, 0.0),        # \boxed{160}, gold 1320
    "chain_sum-s4-0": (0.1, 0.1, 0.0),           # "#### 1222", gold -128
    "chain_sum-s4-1": (0.1, 0.1, 0.0),           # "#### 2444", gold 3037
    "chain_sum-s4-2": (0.1, 0.1, 0.0),           # "#### 11", gold -4
    "basic_arithmetic-s7-0": (0.0, 0.1, 0.0),    # \boxed{-127}, gold -129
    "basic_arithmetic-s7-1": (0.1, 0.1, 0.0),    # "#### 1000", gold -1043
    "gsm_symbolic-s9-0": (0.0, 0.1, 0.0),        # SmolLM2 repeats a line until cut off
    "gsm_symbolic-s9-1": (0.1, 0.1, 0.0),        # SmolLM2 "#### 72" twice, gold 22
    "chain_sum-s5-0": (0.0, 0.1, 0.0),           # "The final answer is 225."
    "chain_sum-s5-1": (0.0, 0.1, 0.0),           # "... = 2."
    "basic_arithmetic-s6-0": (0.0, 0.1, 0.0),    # "the final answer is 8."
    "basic_arithmetic-s6-1": (0.0, 0.1, 0.0),    # "\boxed{} 28": empty box, last number 28
}


@pytest.fixture
def registered(plugin_manager):
    plugin_manager.register(math_plugin, name="rewards_math", distribution="toolrl-rewards-math")
    return plugin_manager


def call(fn, trajs, tasks, **args):
    return fn(trajs, completions=[t.final_text for t in trajs], metadata=[t.metadata for t in tasks], tasks=tasks,
              **args)


def test_plugin_registers_both_rewards(registered):
    names = plugins.registry("rewards").names()
    assert "gsm8k_exact" in names and "math_equiv" in names
    assert plugins.registry("rewards").entry("math_equiv").plugin == "rewards_math"


@pytest.mark.parametrize("fn", [gsm8k_exact, math_equiv])
def test_docstrings_document_args_returns_and_example(fn):
    doc = inspect.getdoc(fn)
    for section in ("Args:", "Returns:", "Example:"):
        assert section in doc, f"{fn.__name__} docstring lacks {section}"
    params = [p for p in inspect.signature(fn).parameters if p != "trajectories"]
    for p in params:
        assert f"{p}:" in doc, f"{fn.__name__} does not document {p}"


def test_real_completions_match_hand_labels(model_outputs):
    trajs, tasks, records = model_outputs
    assert set(EXPECTED) == {r["id"] for r in records}
    strict = call(gsm8k_exact, trajs, tasks, format_score=0.1)
    flexible = call(gsm8k_exact, trajs, tasks, method="flexible", format_score=0.1)
    equiv = call(math_equiv, trajs, tasks)
    got = {t.id: v for t, *v in zip(tasks, strict, flexible, equiv)}
    assert {k: tuple(v) for k, v in got.items()} == EXPECTED


async def test_real_completions_through_the_composition(registered, model_outputs):
    trajs, tasks, _ = model_outputs
    results, metrics = await compute_rewards(trajs, tasks, [
        {"name": "math_equiv", "weight": 0.6},
        {"name": "gsm8k_exact", "weight": 0.4, "args": {"method": "flexible", "format_score": 0.1}},
    ])
    want = [0.6 * EXPECTED[t.task_id][2] + 0.4 * EXPECTED[t.task_id][1] for t in trajs]
    assert [r.total for r in results] == pytest.approx(want)
    assert metrics["reward/math_equiv"] == pytest.approx(sum(v[2] for v in EXPECTED.values()) / len(EXPECTED))
    assert metrics["reward/excluded"] == 0.0


def test_gsm8k_exact_semantics(make_batch):
    trajs, tasks = make_batch([
        ("3 + 4 = 7\n#### 7", "7"),
        ("#### 1,000", "1000"),
        ("#### 72.0", "Natalia sold 48/2 = 24 clips in May.\n#### 72"),  # GSM8K-style solution as ground truth
        ("the answer is 7", "7"),  # strict needs ####
        ("#### 8", "7"),
        ("#### the answer is 7", "7"),
    ])
    assert call(gsm8k_exact, trajs, tasks) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert call(gsm8k_exact, trajs, tasks, method="flexible") == [1.0, 1.0, 1.0, 1.0, 0.0, 1.0]
    assert call(gsm8k_exact, trajs, tasks, format_score=0.1, score=2.0) == [2.0, 2.0, 2.0, 0.0, 0.1, 0.0]


def test_math_equiv_semantics(make_batch):
    trajs, tasks = make_batch([
        ("<answer>The answer is 18 dollars.</answer>", "18"),
        ("so $x = \\boxed{\\frac{1}{2}}$", "0.5"),
        ("simplifies to \\boxed{2x+1}", "1+2x"),
        ("#### 1,250", "1250"),
        ("I think it is 41", "42"),
        ("I cannot solve this", "42"),
    ])
    assert call(math_equiv, trajs, tasks) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert call(math_equiv, trajs, tasks, extract=["boxed"], format_score=0.2) == [0.0, 1.0, 1.0, 0.0, 0.0, 0.0]


async def test_missing_ground_truth_names_the_task(registered, make_batch):
    trajs, tasks = make_batch([("#### 1", "1"), ("#### 2", None)])
    for name in ("gsm8k_exact", "math_equiv"):
        with pytest.raises(RewardError) as info:
            await compute_rewards(trajs, tasks, [{"name": name}])
        text = str(info.value)
        assert "task 't1'" in text and "metadata['answer']" in text and "plugin 'rewards_math'" in text
        results, metrics = await compute_rewards(trajs, tasks, [{"name": name, "on_error": "skip"}])
        assert [r.total for r in results] == [None, None] and metrics[f"reward/errors/{name}"] == 2.0


async def test_bad_args_are_reported(registered, make_batch):
    trajs, tasks = make_batch([("#### 1", "1")])
    with pytest.raises(RewardError, match="method must be 'strict' or 'flexible'"):
        await compute_rewards(trajs, tasks, [{"name": "gsm8k_exact", "args": {"method": "loose"}}])
    with pytest.raises(RewardError, match="unknown extraction method"):
        await compute_rewards(trajs, tasks, [{"name": "math_equiv", "args": {"extract": ["guess"]}}])
    with pytest.raises(RewardError, match=r"does not accept the argument\(s\) \['tolerance'\]"):
        prepare_rewards([{"name": "math_equiv", "args": {"tolerance": 0.1}}])


def test_answer_key_arg(make_batch):
    trajs, tasks = make_batch([("#### 5", "5")], metadata_key="solution")
    assert call(gsm8k_exact, trajs, tasks, answer_key="solution") == [1.0]


def test_fixture_records_how_it_was_made(model_outputs):
    from pathlib import Path

    data = json.loads((Path(__file__).parent / "fixtures" / "completions.json").read_text())
    assert "generate_completions.py" in data["command"]
    assert {r["model"] for r in data["records"]} == {"qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"}
