"""llm_judge end to end against a real `toolrl serve` (SmolLM2-135M-Instruct on 127.0.0.1), plus the
parsing, argument checks and transport failures (a closed port, real timeouts) that need no model."""

from __future__ import annotations

import asyncio
import inspect
import re

import pytest

from toolrl.errors import RewardError
from toolrl.rewards import compute_rewards_sync
from toolrl_rewards_model import judge as J
from toolrl_rewards_model import plugin
from toolrl_rewards_model.judge import llm_judge

JUDGE_MODEL = "smollm2-judge"
JUDGE_KEY = "sk-judge-test"

ROWS = [
    ("What is the capital of France?", "Paris.", {"reference": "Paris"}),
    ("What is the capital of France?", "Berlin is the capital of France.", {"reference": "Paris"}),
    ("What is 2 + 2?", "4", {"reference": "4"}),
]
# a few-shot prompt for the raw /completions endpoint: the model continues after "Score (0-10):"
FEW_SHOT = ("Question: What is 1 + 1?\nAnswer: 2\nScore (0-10): 10\n\n"
            "Question: What is 3 + 3?\nAnswer: 7\nScore (0-10): 0\n\n"
            "Question: {question}\nAnswer: {answer}\nScore (0-10):")


def run(trajs, tasks, **args):
    return asyncio.run(llm_judge(trajs, tasks=tasks, metadata=[t.metadata for t in tasks],
                                 completions=[t.final_text for t in trajs], **args))


def conf(**over):
    args = dict(base_url="http://127.0.0.1:9/v1", model="m", api_key_env=None, rubric=J.DEFAULT_RUBRIC, system=None,
                score_regex=J.DEFAULT_SCORE_REGEX, score_range=(0, 10), unparsable="none", endpoint="chat",
                max_tokens=8, temperature=0.0, timeout=5.0, retries=0, backoff=0.0, concurrency=2, request_args=None)
    args.update(over)
    return J.settings(**args)


# -- parsing (no endpoint) ------------------------------------------------------------------------------


@pytest.mark.parametrize("reply, raw", [
    ("Score: 7", 7.0), ("score = 7.5", 7.5), ("**Score:** 8", 8.0), ("Score:9/10", 9.0),
    ("Good answer.\nSCORE: 10", 10.0), ("I first thought score: 2, but on reflection Score: 6", 6.0),
    ("Score: -3", -3.0), ("Score: 14", 14.0),
])
def test_default_regex_takes_the_last_score_and_normalises(reply, raw):
    parsed = J.parse_score(reply, re.compile(J.DEFAULT_SCORE_REGEX), (0.0, 10.0))
    assert parsed == (raw, min(1.0, max(0.0, raw / 10)))


@pytest.mark.parametrize("reply", ["The answer is 10.", "", "Score: none", "scores are hard"])
def test_replies_without_a_score_are_not_parsed(reply):
    assert J.parse_score(reply, re.compile(J.DEFAULT_SCORE_REGEX), (0.0, 10.0)) is None


def test_score_range_maps_onto_unit_interval():
    pattern = re.compile(r"(\d+)")
    assert J.parse_score("3", pattern, (1.0, 5.0)) == (3.0, 0.5)
    assert J.parse_score("5", pattern, (1.0, 5.0)) == (5.0, 1.0)


@pytest.mark.parametrize("over, where, message", [
    ({"base_url": "127.0.0.1:8000"}, "base_url", "must be an http(s) URL"),
    ({"model": ""}, "model", "model is empty"),
    ({"api_key_env": "TOOLRL_NO_SUCH_VARIABLE"}, "api_key_env", "is not set"),
    ({"rubric": "Grade {answer} for {topic}"}, "rubric", "unknown field(s) ['topic']"),
    ({"rubric": "Grade {question}"}, "rubric", "no {answer} field"),
    ({"rubric": "Grade {answer"}, "rubric", "not a valid template"),
    ({"score_regex": "Score: ("}, "score_regex", "does not compile"),
    ({"score_regex": r"Score: \d+"}, "score_regex", "no capturing group"),
    ({"score_range": (10, 0)}, "score_range", "low < high"),
    ({"unparsable": "drop"}, "unparsable", "bad unparsable"),
    ({"endpoint": "responses"}, "endpoint", "bad endpoint"),
    ({"concurrency": 0}, "concurrency", "bad concurrency"),
    ({"timeout": 0}, "timeout", "bad timeout"),
])
def test_bad_arguments_name_the_argument_and_the_fix(over, where, message):
    with pytest.raises(RewardError) as info:
        conf(**over)
    assert message in info.value.what and info.value.where.endswith(where) and info.value.fix


def test_rubric_with_reference_needs_the_reference(batch):
    trajs, tasks = batch([("q", "a", {})])
    with pytest.raises(RewardError, match=r"uses \{reference\} but metadata\['reference'\]") as info:
        run(trajs, tasks, base_url="http://127.0.0.1:9/v1", model="m", rubric=J.REFERENCE_RUBRIC)
    assert info.value.where == "task 't0'"


# -- transport failures: a closed port (real connection refused), no crash -------------------------------


def test_unreachable_endpoint_is_retried_then_excluded(batch):
    from toolrl_serving.process import free_port

    trajs, tasks = batch(ROWS)
    J.judge_stats(reset=True)
    values = run(trajs, tasks, base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", retries=2, backoff=0.01,
                 concurrency=2)
    assert values == [None, None, None]
    stats = J.judge_stats()
    assert stats["failed"] == 3 and stats["requests"] == 9 and stats["retries"] == 6
    assert stats["max_in_flight"] == 2  # the concurrency limit held


def test_unparsable_zero_does_not_turn_failures_into_zeros(batch):
    from toolrl_serving.process import free_port

    trajs, tasks = batch(ROWS[:1])
    assert run(trajs, tasks, base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", retries=0,
               unparsable="zero") == [None]


# -- a real toolrl serve ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def judge_server(smollm2_path):
    """A real `toolrl serve` of SmolLM2-135M-Instruct on 127.0.0.1 that requires an API key."""
    from toolrl_serving.process import start_server

    keys_env = "TOOLRL_JUDGE_TEST_KEYS"
    s = start_server(smollm2_path, "--served-model-name", JUDGE_MODEL, "--log-level", "warning",
                     "--max-tokens", "64", "--max-batch-size", "8", "--num-threads", "2",
                     "--api-key-env", keys_env, env={keys_env: JUDGE_KEY}, timeout=600)
    yield s
    s.stop()


@pytest.fixture
def judge_args(judge_server, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", JUDGE_KEY)
    return {"base_url": judge_server.base_url + "/v1", "model": JUDGE_MODEL, "api_key_env": "JUDGE_KEY",
            "timeout": 300.0, "retries": 1, "backoff": 0.5}


@pytest.mark.integration
def test_judge_against_toolrl_serve_chat(judge_args, batch, plugin_manager):
    """Real replies of SmolLM2 to the default rubric: each is parsed with the documented regex; a reply
    without a score is excluded and counted (unparsable: none) or scores 0 (unparsable: zero)."""
    rows = ROWS[:2]
    trajs, tasks = batch(rows)
    conf_ = J.settings(**{**dict(rubric=J.DEFAULT_RUBRIC, system=None, score_regex=J.DEFAULT_SCORE_REGEX,
                                 score_range=(0, 10), unparsable="none", endpoint="chat", max_tokens=8,
                                 temperature=0.0, concurrency=2, request_args=None), **judge_args})
    J.judge_stats(reset=True)
    prompts = [J.render(conf_, q, a, "") for q, a, _ in rows]
    verdicts = asyncio.run(J.judge(conf_, prompts))
    stats = J.judge_stats()
    assert stats["requests"] == 2 and stats["replies"] == 2 and stats.get("failed", 0) == 0
    assert all(isinstance(v.reply, str) and v.reply.strip() for v in verdicts)  # the model wrote something
    for v in verdicts:  # the documented regex decides; the model's replies are whatever it wrote
        expected = J.parse_score(v.reply, re.compile(J.DEFAULT_SCORE_REGEX), (0, 10))
        assert (v.score is None) == (expected is None)
        if expected is not None:
            assert (v.raw, v.score) == expected and 0.0 <= v.score <= 1.0
    misses = sum(v.score is None for v in verdicts)
    assert stats.get("unparsable", 0) == misses

    plugin_manager.register(plugin, name="rewards_model")
    spec = {"name": "llm_judge", "args": {**judge_args, "max_tokens": 8, "concurrency": 2}}
    for unparsable in ("none", "zero"):
        spec["args"]["unparsable"] = unparsable
        before = J.judge_stats().get("unparsable", 0)
        results, metrics = compute_rewards_sync(trajs, tasks, [spec])
        misses = J.judge_stats().get("unparsable", 0) - before
        values = [r.components["llm_judge"] for r in results]
        assert all(v is None or 0.0 <= v <= 1.0 for v in values)
        if unparsable == "none":
            assert values.count(None) == misses == metrics["reward/none/llm_judge"] == metrics["reward/excluded"]
        else:
            assert None not in values and values.count(0.0) >= misses and metrics["reward/excluded"] == 0


@pytest.mark.integration
def test_judge_completions_endpoint_few_shot(judge_args, batch):
    """With the raw /completions endpoint and a few-shot prompt the model answers with a number."""
    trajs, tasks = batch(ROWS)
    J.judge_stats(reset=True)
    values = run(trajs, tasks, **judge_args, endpoint="completions", rubric=FEW_SHOT, score_regex=r"^\s*(\d+)",
                 max_tokens=3, request_args={"stop": ["\n"]})
    assert J.judge_stats()["scored"] == 3
    assert all(v is not None and 0.0 <= v <= 1.0 for v in values)
    assert all(round(v * 10, 6) == int(round(v * 10)) for v in values)  # an integer on the 0-10 scale


@pytest.mark.integration
def test_rejected_requests_are_configuration_errors(judge_args, batch, monkeypatch):
    trajs, tasks = batch(ROWS[:1])
    monkeypatch.setenv("JUDGE_KEY", "sk-wrong")
    with pytest.raises(RewardError, match="HTTP 401") as info:
        run(trajs, tasks, **judge_args)
    assert "api_key_env" in info.value.fix
    monkeypatch.setenv("JUDGE_KEY", JUDGE_KEY)
    with pytest.raises(RewardError, match="HTTP 404") as info:
        run(trajs, tasks, **{**judge_args, "model": "no-such-judge"})
    assert "/models" in info.value.fix


@pytest.mark.integration
def test_timeouts_are_retried_then_excluded(judge_args, batch):
    trajs, tasks = batch(ROWS[:2])
    J.judge_stats(reset=True)
    values = run(trajs, tasks, **{**judge_args, "timeout": 0.05, "retries": 1, "backoff": 0.0}, max_tokens=64)
    assert values == [None, None]
    stats = J.judge_stats()
    assert stats["failed"] == 2 and stats["retries"] == 2


def test_documented():
    doc = inspect.getdoc(llm_judge)
    for p in inspect.signature(llm_judge).parameters:
        assert f"    {p}:" in doc or p == "trajectories", p
