"""EpisodeRecorder: how an agent program's requests become segments of token ids (SmolLM2's real tokenizer).

The sampled ids here are given directly (the recorder never samples); tests/… in plugins/envs/program run
the whole thing with the real engine and endpoint.
"""

from __future__ import annotations

import pytest

from toolrl.chat.template import ChatFormat, render_messages
from toolrl.rewards import REWARD_KEYWORDS, compute_rewards
from toolrl.rollout.program_record import EpisodeClosedError, EpisodeRecorder, TokenBudgetError
from toolrl.types import Task


@pytest.fixture(scope="module")
def tok(smollm2_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_path))


USER = {"role": "user", "content": "Name a color."}
TASK = Task(id="t", messages=(USER,))


def reply(content):
    return {"role": "assistant", "content": content}


def sample(tok, text):
    """Ids as if the model had sampled `text` and stopped on <|im_end|>."""
    return tok.encode(text, add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]


def test_extension_continues_the_segment_token_for_token(tok):
    rec = EpisodeRecorder(tok, max_total_tokens=512)
    t1 = rec.begin([USER], None)
    assert not t1.extends and list(t1.prompt_ids) == render_messages(tok, [USER])
    s1 = sample(tok, "Blue.")
    rec.finish(t1, s1, [-0.5] * len(s1), "stop", reply("Blue."))
    follow = {"role": "user", "content": "Another."}
    t2 = rec.begin([USER, reply("Blue."), follow], None)
    assert t2.extends and t2.segment == t1.segment
    # the previous prompt and the sampled ids as they were, then only the new text
    assert list(t2.prompt_ids[: len(t1.prompt_ids) + len(s1)]) == list(t1.prompt_ids) + s1
    tail = tok.decode(list(t2.prompt_ids[len(t1.prompt_ids) + len(s1):]))
    assert tail == "\n<|im_start|>user\nAnother.<|im_end|>\n<|im_start|>assistant\n"
    s2 = sample(tok, "Red.")
    rec.finish(t2, s2, [-0.25] * len(s2), "stop", reply("Red."))
    t = rec.trajectory(TASK, 0, result="ok")
    assert t.segments == () and t.num_turns == 2 and t.result == "ok" and t.finish_reason == "stop"
    assert list(t.prompt_ids + t.response_ids) == list(t2.prompt_ids) + s2
    context = len(t2.prompt_ids) - len(t1.prompt_ids) - len(s1)
    assert list(t.loss_mask) == [1] * len(s1) + [0] * context + [1] * len(s2)
    assert list(t.logprobs) == [-0.5] * len(s1) + [0.0] * context + [-0.25] * len(s2)
    # and it is the template's rendering of the whole conversation
    fmt = ChatFormat.of(tok)
    full = fmt.encode(fmt.render_text(t.messages))
    assert full[: len(t.prompt_ids) + len(t.response_ids)] == list(t.prompt_ids + t.response_ids)
    assert t.completion_messages == (reply("Blue."), follow, reply("Red."))


def test_edits_branches_and_tool_changes_start_segments(tok):
    rec = EpisodeRecorder(tok, max_total_tokens=512)
    t1 = rec.begin([USER], None)
    s1 = sample(tok, "Blue.")
    rec.finish(t1, s1, [-1.0] * len(s1), "stop", reply("Blue."))
    edited = rec.begin([USER, reply("Green."), {"role": "user", "content": "More."}], None)  # reply rewritten
    assert not edited.extends and edited.segment == 1
    rec.abort(edited)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    other_tools = rec.begin([USER, reply("Blue."), {"role": "user", "content": "More."}], [tool])
    assert not other_tools.extends
    rec.abort(other_tools)
    same = rec.begin([USER, reply("Blue."), {"role": "user", "content": "More."}], None)
    assert same.extends and same.segment == 0
    # a second request on the same conversation while the first is in flight: its own segment
    parallel = rec.begin([USER, reply("Blue."), {"role": "user", "content": "More."}], None)
    assert not parallel.extends
    s2 = sample(tok, "Red.")
    rec.finish(parallel, s2, [-2.0] * len(s2), "stop", reply("Red."))
    rec.abort(same)
    t = rec.trajectory(TASK, 1)
    # aborted and unused segments are dropped; the last finished call's segment is the trajectory
    assert len(t.segments) == 1 and list(t.segments[0].response_ids) == s1
    assert list(t.response_ids) == s2 and t.num_turns == 2


def test_budget_and_closing(tok):
    rec = EpisodeRecorder(tok, max_total_tokens=8)
    t1 = rec.begin([USER], None)
    assert t1.max_new_tokens == 8
    s1 = sample(tok, "Blue is a nice color.")
    rec.finish(t1, s1, [0.0] * len(s1), "stop", reply("Blue is a nice color."))
    with pytest.raises(TokenBudgetError, match="max_total_tokens=8"):
        rec.begin([USER, reply("Blue is a nice color."), {"role": "user", "content": "More."}], None)
    t = rec.trajectory(TASK, 0, error="boom")
    assert t.finish_reason == "error" and t.error == "boom"
    with pytest.raises(EpisodeClosedError):
        rec.begin([USER], None)


def test_no_call_uses_the_fallback_prompt(tok):
    rec = EpisodeRecorder(tok, max_total_tokens=64)
    prompt = render_messages(tok, [USER])
    t = rec.trajectory(TASK, 0, result=None, fallback_prompt=prompt)
    assert list(t.prompt_ids) == prompt and t.response_ids == () and t.num_turns == 0


async def test_rewards_get_the_result(tok):
    rec = EpisodeRecorder(tok, max_total_tokens=64)
    traj = rec.trajectory(TASK, 0, result={"answer": 7})
    seen = {}

    def wants_result(trajectories, *, result):
        seen["result"] = result
        return [1.0 if r == {"answer": 7} else 0.0 for r in result]

    results, _ = await compute_rewards([traj], [TASK], [{"name": "wants_result"}], registry={"wants_result": wants_result})
    assert "result" in REWARD_KEYWORDS
    assert seen["result"] == [{"answer": 7}] and results[0].total == 1.0
