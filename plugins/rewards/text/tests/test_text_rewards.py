"""The text rewards on hand-written cases: semantics, arguments and errors (model outputs: test_model_outputs.py)."""

from __future__ import annotations

import inspect

import pytest

from toolrl import plugins
from toolrl.errors import RewardError
from toolrl.rewards import compute_rewards, prepare_rewards
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

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
    "required": ["city"], "additionalProperties": False}}}
ALL = [format_tool_call, format_answer_tag, reasoning_connectors, length_penalty, bleu2, keyword_recall, bertscore_f1]


@pytest.fixture
def registered(plugin_manager):
    plugin_manager.register(text_plugin, name="rewards_text", distribution="toolrl-rewards-text")
    return plugin_manager


def kw(trajs, tasks):
    return {"completions": [t.final_text for t in trajs], "metadata": [t.metadata for t in tasks], "tasks": tasks}


def test_plugin_registers_all_seven(registered):
    assert set(text_plugin.REWARDS) <= set(plugins.names("rewards"))
    assert len(text_plugin.REWARDS) == 7


@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__)
def test_docstrings_document_every_argument(fn):
    doc = inspect.getdoc(fn)
    for section in ("Args:", "Returns:", "Example:"):
        assert section in doc, f"{fn.__name__} lacks {section}"
    for p in inspect.signature(fn).parameters:
        assert f"    {p}:" in doc or p == "trajectories" and "trajectories:" in doc, f"{fn.__name__}: {p} undocumented"


# -- format_tool_call ----------------------------------------------------------


def test_format_tool_call_uses_the_trajectory_counters(build):
    t = build.task("w", tools=[WEATHER])
    trajs = [
        build.trajectory("w", [], "", tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}]),
        build.trajectory("w", [], "", tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}],
                         malformed=1),
        build.trajectory("w", [], "no call"),
        build.trajectory("w", [], "", tool_calls=[{"name": "get_wether", "arguments": {"city": "Paris"}}]),
        build.trajectory("w", [], "", tool_calls=[{"name": "get_weather", "arguments": {"unit": "celsius"}}]),
        build.trajectory("w", [], "", tool_calls=[{"name": "get_weather", "arguments": {"city": "X", "days": 3}}]),
    ]
    tasks = [t] * len(trajs)
    assert format_tool_call(trajs, tasks=tasks) == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert format_tool_call(trajs, tasks=tasks, check_arguments=False) == [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    assert format_tool_call(trajs, tasks=tasks, check_names=False, check_arguments=False) == [1, 0, 0, 1, 1, 1]
    assert format_tool_call(trajs, tasks=tasks, min_calls=0) == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    # a task without tool schemas: only the counters matter
    assert format_tool_call(trajs[:1], tasks=[build.task("w")]) == [1.0]


# -- format_answer_tag ---------------------------------------------------------


@pytest.mark.parametrize("text, plain, at_end", [
    ("2 + 2 = 4, so <answer>4</answer>", 1.0, 1.0),
    ("<ANSWER>4</ANSWER> that's it", 1.0, 0.0),
    ("<answer> </answer>", 0.0, 0.0),
    ("<answer>4", 0.0, 0.0),
    ("</answer>4<answer>", 0.0, 0.0),
    ("<answer>4</answer><answer>5</answer>", 0.0, 0.0),
    ("", 0.0, 0.0),
])
def test_format_answer_tag(build, text, plain, at_end):
    traj = [build.trajectory("a", [], text)]
    assert format_answer_tag(traj, completions=[text]) == [plain]
    assert format_answer_tag(traj, completions=[text], at_end=True) == [at_end]


def test_format_answer_tag_custom_tag_and_bad_tag(build):
    assert format_answer_tag([None], completions=["<final>x</final>"], tag="final") == [1.0]
    with pytest.raises(RewardError, match="not a valid tag name"):
        format_answer_tag([None], completions=["x"], tag="<answer>")


# -- reasoning_connectors / length_penalty ----------------------------------------


def test_reasoning_connectors_count_each_phrase_once_in_order(build):
    texts = ["Because it is lighter, therefore it floats. Because of that, therefore...",
             "Therefore x, because y.",  # wrong order
             "因为冰的密度小,所以它浮在水面上。由此可得结论。",
             "Since 3 > 2, so 3 wins; if a then b.",
             "becausetherefore"]
    trajs = [build.trajectory("r", [], t) for t in texts]
    assert reasoning_connectors(trajs, completions=texts) == pytest.approx([0.3, 0.0, 0.6, 0.6, 0.0])
    assert reasoning_connectors(trajs, completions=texts, phrases=["because ... therefore"], per_phrase=1.0) \
        == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert reasoning_connectors(trajs, completions=texts, max_reward=0.5) == pytest.approx([0.3, 0.0, 0.5, 0.5, 0.0])


def test_reasoning_connectors_text_final_vs_all(build):
    traj = build.trajectory("r", [], "so the answer is 4", earlier=("Because 2+2 is 4, therefore",))
    assert reasoning_connectors([traj], completions=[traj.final_text]) == [0.3]
    assert reasoning_connectors([traj], completions=[traj.final_text], text="final") == [0.0]
    with pytest.raises(RewardError, match="text must be 'final' or 'all'"):
        reasoning_connectors([traj], completions=[traj.final_text], text="first")
    with pytest.raises(RewardError, match="one string"):
        reasoning_connectors([traj], completions=[traj.final_text], phrases="because")


@pytest.mark.parametrize("n, expected", [(0, 0.0), (200, 0.0), (201, -0.1), (210, -0.1), (211, -0.2), (235, -0.4)])
def test_length_penalty_steps(build, n, expected):
    traj = build.trajectory("l", [], "x" * n)
    assert length_penalty([traj], completions=["x" * n]) == [pytest.approx(expected)]


def test_length_penalty_counts_chinese_characters_tokens_and_caps(build):
    zh = "因" * 215
    traj = build.trajectory("l", [], zh, sampled_tokens=300)
    assert length_penalty([traj], completions=[zh]) == [pytest.approx(-0.2)]
    assert length_penalty([traj], completions=[zh], unit="tokens", limit=250, per=25, penalty=0.5) == [-1.0]
    assert length_penalty([traj], completions=[zh], max_penalty=0.1) == [pytest.approx(-0.1)]
    with pytest.raises(RewardError, match="unit must be"):
        length_penalty([traj], completions=[zh], unit="words")
    with pytest.raises(RewardError, match="per > 0"):
        length_penalty([traj], completions=[zh], per=0)


# -- bleu2 / keyword_recall / bertscore_f1 -----------------------------------------


def test_bleu2_and_multiple_references(build):
    t = build.task("m", {"reference": "the charger works with model X"})
    texts = ["the charger works with model X", "the charger works", "bananas are yellow", ""]
    trajs = [build.trajectory("m", [], x) for x in texts]
    scores = bleu2(trajs, **kw(trajs, [t] * 4))
    assert scores[0] == pytest.approx(1.0) and 0.0 < scores[1] < 1.0 and scores[2] == 0.0 and scores[3] == 0.0
    t2 = build.task("m", {"reference": ["bananas are yellow", "unrelated"]})
    assert bleu2(trajs[2:3], **kw(trajs[2:3], [t2])) == [pytest.approx(1.0)]
    zh = build.task("z", {"reference": "您上次问过充电器的兼容性"})
    z = [build.trajectory("z", [], "我上次问过充电器兼容性")]
    assert bleu2(z, **kw(z, [zh]), tokenize="zh")[0] > bleu2(z, **kw(z, [zh]))[0]


def test_keyword_recall(build):
    t = build.task("k", {"keywords": ["USB-C", "65W"]})
    texts = ["Use a 65W usb-c charger.", "Use any charger", "USB-C only", "usb-cable 65Watt"]
    trajs = [build.trajectory("k", [], x) for x in texts]
    assert keyword_recall(trajs, **kw(trajs, [t] * 4)) == [1.0, 0.0, 0.5, 0.0]
    dates = build.task("d", {"keywords": ["June 21"]})
    texts = ["on June 21st", "on june 21", "on June 212", "on June 2"]
    trajs = [build.trajectory("d", [], x) for x in texts]
    assert keyword_recall(trajs, **kw(trajs, [dates] * 4)) == [1.0, 1.0, 0.0, 0.0]
    # no keyword list: the reference's content words (order, 4471, ships, berlin) are the keywords
    derived = build.task("k", {"reference": "Your order 4471 ships to Berlin."})
    x = [build.trajectory("k", [], "Order 4471 goes to Berlin")]
    assert keyword_recall(x, **kw(x, [derived])) == [pytest.approx(3 / 4)]
    zh = build.task("z", {"keywords": ["充电器"]})
    assert keyword_recall(x, completions=["这个充电器可以"], metadata=[zh.metadata], tasks=[zh]) == [1.0]


@pytest.mark.parametrize("fn, meta, message", [
    (bleu2, {}, "no reference text in metadata['reference']"),
    (bleu2, {"reference": 3}, "no reference text"),
    (keyword_recall, {}, "no reference text"),
    (keyword_recall, {"keywords": "usb"}, "must be a non-empty list of strings"),
    (keyword_recall, {"keywords": []}, "must be a non-empty list of strings"),
    (bertscore_f1, {"reference": ""}, "no reference text"),
])
async def test_missing_references_name_the_task(registered, build, fn, meta, message):
    t = build.task("task-7", meta)
    trajs = [build.trajectory("task-7", [], "hello")]
    with pytest.raises(RewardError) as info:
        await compute_rewards(trajs, [t], [{"name": fn.__name__}])
    assert message in str(info.value) and "task 'task-7'" in str(info.value)
    assert "plugin 'rewards_text'" in str(info.value)


def test_bertscore_ranks_paraphrase_above_unrelated_and_caches_the_model(build):
    from toolrl_rewards_text import model_based

    t = build.task("b", {"reference": "Your package arrives on Monday."})
    texts = ["Your parcel will be delivered Monday.", "I like turtles.", "Your package arrives on Monday.", ""]
    trajs = [build.trajectory("b", [], x) for x in texts]
    scores = bertscore_f1(trajs, **kw(trajs, [t] * 4))
    assert scores[2] == pytest.approx(1.0, abs=1e-5)
    assert scores[0] > scores[1] + 0.1
    assert scores[3] == 0.0
    loaded = dict(model_based._MODELS)
    assert len(loaded) == 1
    rescaled = bertscore_f1(trajs, **kw(trajs, [t] * 4), baseline=0.3)
    assert model_based._MODELS == loaded  # same objects: loaded once per process
    assert rescaled[0] == pytest.approx((scores[0] - 0.3) / 0.7)
    with pytest.raises(RewardError, match="baseline must be in"):
        bertscore_f1(trajs, **kw(trajs, [t] * 4), baseline=1.0)


def test_bertscore_unknown_model_says_how_to_fix(build):
    from toolrl.errors import ModelNotAvailableError

    t = build.task("b", {"reference": "x"})
    with pytest.raises(ModelNotAvailableError, match="unknown embedding model"):
        bertscore_f1([None], completions=["x"], metadata=[t.metadata], tasks=[t], model="no-such-model")


def test_unknown_args_fail_before_scoring(registered):
    with pytest.raises(RewardError, match=r"does not accept the argument\(s\) \['limt'\]"):
        prepare_rewards([{"name": "length_penalty", "args": {"limt": 100}}])
