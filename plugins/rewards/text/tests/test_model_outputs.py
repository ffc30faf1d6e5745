"""The text rewards on real completions of SmolLM2-135M and Qwen2.5-Coder-0.5B (fixtures/completions.json).

Every expected value below was worked out by reading the completion (the
generator's docstring has the command that made them); the BLEU-2 values are
computed by hand from the 13a tokens, as the comments show.
"""

from __future__ import annotations

import math

import pytest

from toolrl.rewards import compute_rewards
from toolrl_rewards_text import (
    bertscore_f1,
    bleu2,
    format_answer_tag,
    format_tool_call,
    keyword_recall,
    length_penalty,
    reasoning_connectors,
)
from toolrl_rewards_text import plugin as text_plugin


def group(model_outputs, name):
    items = model_outputs[name]
    trajs = [t for t, _, _ in items]
    tasks = [task for _, task, _ in items]
    kw = {"completions": [t.final_text for t in trajs], "metadata": [t.metadata for t in tasks], "tasks": tasks}
    return {task.id: i for i, task in enumerate(tasks)}, trajs, tasks, kw


def by_id(ids, values):
    return {tid: values[i] for tid, i in ids.items()}


def test_format_tool_call_on_real_tool_calls(model_outputs):
    ids, trajs, tasks, _ = group(model_outputs, "tool")
    assert by_id(ids, format_tool_call(trajs, tasks=tasks)) == {
        "tool-0-qwen2.5": 1.0,   # ```json {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}```
        "tool-0-smollm2": 0.0,   # describes the weather instead of calling the tool
        "tool-1-qwen2.5": 1.0,   # bare {"name": "calculate", "arguments": {"expression": "17 * 23"}}
        "tool-1-smollm2": 0.0,   # answers 17 * 23 = 321 without a call
        "tool-2-qwen2.5": 1.0,   # get_weather(city=Tokyo, unit=celsius)
        "tool-3-qwen2.5": 0.0,   # a fun fact needs no tool: no call ...
    }
    assert by_id(ids, format_tool_call(trajs, tasks=tasks, min_calls=0))["tool-3-qwen2.5"] == 1.0  # ... fine with 0


def test_format_answer_tag_on_real_answers(model_outputs):
    ids, trajs, _, kw = group(model_outputs, "tag")
    assert by_id(ids, format_answer_tag(trajs, completions=kw["completions"], at_end=True)) == {
        "tag-0-qwen2.5": 0.0,    # "The capital of Australia is Canberra." (ignored the tag instruction)
        "tag-0-smollm2": 0.0,
        "tag-1-qwen2.5": 1.0,    # "<answer>8</answer>"
        "tag-1-smollm2": 0.0,    # "A spider has 8 legs."
        "tag-2-qwen2.5": 0.0,
    }


def test_reasoning_connectors_and_length_on_real_explanations(model_outputs):
    ids, trajs, _, kw = group(model_outputs, "reason")
    assert by_id(ids, reasoning_connectors(trajs, completions=kw["completions"])) == pytest.approx({
        "reason-0-qwen2.5": 0.0,   # "Because ... because ...": no "therefore"
        "reason-0-smollm2": 0.3,   # "... is because of the law ... The word 'therefore' ..."
        "reason-1-qwen2.5": 0.0,
        "reason-1-smollm2": 0.0,   # "because" only
        "reason-2-qwen2.5": 0.3,   # "因为天空是蓝色的，所以..."
    })
    assert by_id(ids, length_penalty(trajs, completions=kw["completions"])) == pytest.approx({
        "reason-0-qwen2.5": 0.0,   # 115 characters
        "reason-0-smollm2": -5.1,  # 707 characters: ceil(507 / 10) = 51 steps of 0.1
        "reason-1-qwen2.5": 0.0,   # 88
        "reason-1-smollm2": 0.0,   # 129
        "reason-2-qwen2.5": 0.0,   # 21
    })
    tokens = length_penalty(trajs, completions=kw["completions"], unit="tokens", limit=100)
    assert by_id(ids, tokens)["reason-0-smollm2"] == pytest.approx(-0.5)  # 149 sampled tokens: 5 steps


MEMORY_KEYWORDS = {
    "memory-s11-00000": 0.0,   # "Yes, my plan includes free returns." (never says Premium)
    "memory-s11-00001": 1.0,   # "... as it is a ThinkPad X1."
    "memory-s11-00002": 1.0,   # "On August 14."
    "memory-s11-00003": 0.0,   # "I'm sorry for any confusion." repeated
    "memory-s11-00004": 1.0,   # "On June 21st, 2024."
}


def test_keyword_recall_and_bleu2_on_real_memory_answers(model_outputs):
    ids, trajs, _, kw = group(model_outputs, "memory")
    assert by_id(ids, keyword_recall(trajs, **kw)) == MEMORY_KEYWORDS
    bleu = by_id(ids, bleu2(trajs, **kw))
    # "on august 14 ." vs "your birthday voucher comes on august 14 .": p1 = 4/4, p2 = 3/3, BP = exp(1 - 8/4)
    assert bleu["memory-s11-00002"] == pytest.approx(math.exp(-1))
    # "on june 21st , 2024 ." vs "... comes on june 21 .": p1 = 3/6, p2 = 1/5, BP = exp(1 - 8/6)
    assert bleu["memory-s11-00004"] == pytest.approx(math.exp(-1 / 3) * math.sqrt(3 / 6 * 1 / 5))
    # 16 tokens vs "for your thinkpad x1 , use the charger made for the thinkpad x1 .": p1 = 5/16, p2 = 2/15
    assert bleu["memory-s11-00001"] == pytest.approx(math.sqrt(5 / 16 * 2 / 15))
    assert bleu["memory-s11-00003"] < 0.01 < bleu["memory-s11-00000"] < bleu["memory-s11-00001"]


def test_bertscore_prefers_real_answers_that_state_the_fact(model_outputs):
    ids, trajs, _, kw = group(model_outputs, "memory")
    scores = by_id(ids, bertscore_f1(trajs, **kw))
    stating = [scores[k] for k, v in MEMORY_KEYWORDS.items() if v == 1.0]
    other = [scores[k] for k, v in MEMORY_KEYWORDS.items() if v == 0.0]
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert min(stating) > max(other)
    assert scores["memory-s11-00003"] < 0.3  # the repeated apology is far from the reference


async def test_memory_recipe_through_the_composition(plugin_manager, model_outputs):
    plugin_manager.register(text_plugin, name="rewards_text")
    _, trajs, tasks, _ = group(model_outputs, "memory")
    results, metrics = await compute_rewards(trajs, tasks, [{"name": "keyword_recall", "weight": 0.5},
                                                            {"name": "bleu2", "weight": 0.3},
                                                            {"name": "length_penalty", "weight": 0.2}])
    assert metrics["reward/keyword_recall"] == pytest.approx(3 / 5)
    assert metrics["reward/excluded"] == 0.0
    junk = next(r for t, r in zip(trajs, results) if t.task_id == "memory-s11-00003")
    # 665 characters of repeated apology: keyword 0, BLEU ~0.005, length -4.7 (47 steps)
    assert junk.components["length_penalty"] == pytest.approx(-4.7)
    assert junk.total == pytest.approx(0.3 * junk.components["bleu2"] + 0.2 * -4.7)
