"""`env: program` for real: SmolLM2-135M on the hf backend, the endpoint on 127.0.0.1, the official
`openai` client in the programs (tests/programs/agents.py).

- the recorded ids are the chat template's rendering of the conversation and exactly the engine's samples;
  the rollout logprobs match a teacher-forced forward pass;
- a program that edits its history makes segments, each its own exact rendering;
- streaming and tool calls behave as `toolrl serve` (the tool call is parsed by the training parser);
- a raising, a hanging and a blocking program each fail their own episode; the others finish;
- a foreign key and the key of an ended episode get 401.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolrl.chat.template import ChatFormat
from toolrl.rollout.agent_loop import LoopSettings, run_episodes_sync
from toolrl.rollout.testing import teacher_forced_logprobs
from toolrl.types import Task

pytestmark = pytest.mark.integration

AGENTS = Path(__file__).parent / "programs" / "agents.py"
QUESTION = ({"role": "user", "content": "Name a color."},)
LOGPROB_TOL = 1e-3  # as the agent-loop tests; measured max |diff| 4.4e-5 over 95 tokens (float32 CPU, KV cache vs one pass)


def entry(fn: str) -> str:
    return f"{AGENTS}:{fn}"


def task(tid: str, fn: str, timeout: float = 600, messages=QUESTION) -> Task:
    return Task(id=tid, messages=messages, env="program", env_args={"entry": entry(fn), "timeout": timeout})


def sampled_runs(t):
    """(start, end) of every run of mask-1 tokens in the response."""
    runs, start = [], None
    for i, k in enumerate([*t.loss_mask, 0]):
        if k and start is None:
            start = i
        elif not k and start is not None:
            runs.append((start, i))
            start = None
    return runs


def test_token_exact_multi_turn(program_env, spy, smol):
    """Three calls on one conversation: one segment whose ids are the template's rendering of the whole
    conversation, whose sampled runs are exactly the engine's results, prompted exactly as recorded."""
    settings = LoopSettings(temperature=0.0, max_new_tokens=12, max_total_tokens=512, seed=3)
    [t] = run_episodes_sync([task("chat", "chat_three_turns")], 1, spy, smol.tokenizer, settings)
    assert t.finish_reason in ("stop", "length") and t.error is None, t.error
    assert t.num_turns == 3 and t.segments == ()
    assert len(t.result) == 3 and all(isinstance(r, str) for r in t.result)
    tok = smol.tokenizer
    fmt = ChatFormat.of(tok)
    ids = list(t.prompt_ids + t.response_ids)
    # the chat template's rendering of the whole conversation (the replies as the program received them)
    full = fmt.encode(fmt.render_text(t.messages))
    assert full[: len(ids)] == ids
    assert tok.decode(full[len(ids):]) in ("\n", "<|im_end|>\n")  # what follows the last sampled token
    # the engine's samples, in order, are exactly the mask-1 runs; each call was prompted with the recorded prefix
    runs = sampled_runs(t)
    assert len(runs) == len(spy.calls) == 3
    for (start, end), (request, result) in zip(runs, spy.calls):
        assert list(t.response_ids[start:end]) == list(result.token_ids)
        assert list(t.logprobs[start:end]) == list(result.logprobs)
        assert list(request.prompt_ids) == list(t.prompt_ids + t.response_ids[:start])
    assert all(lp == 0.0 for lp, k in zip(t.logprobs, t.loss_mask) if not k)
    # the replies the program got are the decoded samples
    assert [m["content"] for m in t.completion_messages if m["role"] == "assistant"] == t.result


def test_logprobs_match_teacher_forcing(program_env, smol):
    """Sampled at T=1: the recorded logprobs equal a teacher-forced forward pass of the recorded ids."""
    settings = LoopSettings(temperature=1.0, max_new_tokens=12, max_total_tokens=512, seed=11)
    [t] = run_episodes_sync([task("chat", "chat_three_turns")], 1, smol, smol.tokenizer, settings)
    assert t.error is None and t.num_sampled_tokens > 0
    forced = teacher_forced_logprobs(smol.model, t.prompt_ids, t.response_ids, 1.0)
    diffs = [abs(a - b) for a, b, k in zip(t.logprobs, forced, t.loss_mask) if k]
    assert max(diffs) < LOGPROB_TOL, max(diffs)


def test_edited_history_splits_into_segments(program_env, spy, smol):
    """The third call drops the first exchange: it starts a second segment, rendered afresh; the first
    segment keeps its two calls; each segment is the template's rendering of its own conversation."""
    settings = LoopSettings(temperature=0.0, max_new_tokens=10, max_total_tokens=512)
    [t] = run_episodes_sync([task("forget", "forgetful")], 1, spy, smol.tokenizer, settings)
    assert t.error is None, t.error
    assert t.num_turns == 3 and len(t.segments) == 1
    fmt = ChatFormat.of(smol.tokenizer)
    [first] = t.segments
    # the last segment (the trajectory itself): a fresh rendering of the short conversation + one sample
    assert list(t.prompt_ids) == fmt.prompt_ids(t.messages[:-1])
    assert [m["content"] for m in t.messages[:-1]] == ["Name a color.", "Name a fruit."]
    assert list(t.response_ids) == list(spy.calls[2][1].token_ids) and all(t.loss_mask)
    # the first segment: two samples with the follow-up question between them as context
    assert sum(1 for _ in sampled_runs(first)) == 2
    sampled = [tid for tid, k in zip(first.response_ids, first.loss_mask) if k]
    assert sampled == list(spy.calls[0][1].token_ids) + list(spy.calls[1][1].token_ids)
    assert list(spy.calls[1][0].prompt_ids) == list(first.prompt_ids) + list(first.response_ids[:len(first.response_ids)
                                                                                                  - len(spy.calls[1][1].token_ids)])


def test_streaming_and_tool_calls(program_env, spy, smol):
    """The program streams with tools: the call arrives as OpenAI tool_calls (no markup in the content),
    as `toolrl serve` sends it; the tool result continues the same segment as masked context."""
    from toolrl.chat.parsers import get_parser

    settings = LoopSettings(temperature=0.0, max_new_tokens=32, max_total_tokens=512)
    [t] = run_episodes_sync([task("weather", "streamed_tool_call")], 1, spy, smol.tokenizer, settings)
    assert t.error is None, t.error
    r = t.result
    assert r["finish"] == "tool_calls" and r["calls"], r
    assert "<tool_call>" not in r["content"]
    name, arguments = r["calls"][0]
    assert name and isinstance(json.loads(arguments), dict)  # SmolLM2 names what it likes; the parser decides
    # the training parser on the engine's sampled text finds the same call
    sampled_text = smol.tokenizer.decode(list(spy.calls[0][1].token_ids), skip_special_tokens=True)
    parsed = get_parser("auto").parse(sampled_text)
    assert [(c.name, dict(c.arguments)) for c in parsed.tool_calls] == [(name, json.loads(arguments))]
    assert [(c.name, dict(c.arguments)) for c in t.tool_calls] == [(name, json.loads(arguments))]
    # one segment: streamed sample, tool message (mask 0), second sample
    assert t.segments == () and t.num_turns == 2 and len(sampled_runs(t)) == 2
    (s1, e1), (s2, _) = sampled_runs(t)
    assert list(t.response_ids[s1:e1]) == list(spy.calls[0][1].token_ids)
    assert list(t.logprobs[s1:e1]) == list(spy.calls[0][1].logprobs)
    context = smol.tokenizer.decode(list(t.response_ids[e1:s2]))
    assert "rainy, 12 C" in context and context.endswith("<|im_start|>assistant\n")


def test_failing_programs_fail_only_their_episode(program_env, smol, caplog):
    """A raising, a hanging (async) and a blocking (sync) program each end their own episode with
    finish reason `error` and the reason; the healthy episodes of the same batch finish normally."""
    settings = LoopSettings(temperature=1.0, max_new_tokens=8, max_total_tokens=256)
    # the hanging and blocking episodes end at their timeout (whether or not their one model call has been
    # answered by then, the same error), so the test waits that long; the other episodes keep the default
    tasks = [task("ok", "chat_three_turns"), task("raise", "raises"), task("hang", "hangs", timeout=6),
             task("block", "blocks", timeout=6)]
    trajs = run_episodes_sync(tasks, 2, smol, smol.tokenizer, settings)
    by = {(t.task_id, t.sample_index): t for t in trajs}
    assert [t.task_id for t in trajs] == ["ok", "ok", "raise", "raise", "hang", "hang", "block", "block"]
    for i in range(2):
        ok = by[("ok", i)]
        assert ok.finish_reason != "error" and ok.num_turns == 3 and len(ok.result) == 3
        bad = by[("raise", i)]
        assert bad.finish_reason == "error" and bad.result is None
        assert "Traceback" in bad.error and "ValueError: the program broke on purpose" in bad.error
        assert bad.num_turns == 1 and bad.num_sampled_tokens > 0  # its call before the error is recorded
        for name in ("hang", "block"):
            t = by[(name, i)]
            assert t.finish_reason == "error" and "did not finish within env_args.timeout=6s" in t.error
        assert "asyncio.sleep" in by[("hang", i)].error or "hangs" in by[("hang", i)].error  # where it waited
    assert "the program broke on purpose" in caplog.text


def test_foreign_and_ended_keys_get_401(program_env, smol):
    settings = LoopSettings(temperature=1.0, max_new_tokens=4, max_total_tokens=128)
    trajs = run_episodes_sync([task("leak", "leaks_key"), task("probe", "tries_other_keys")], 1, smol,
                              smol.tokenizer, settings)
    leak, probe = trajs
    assert leak.result == "done" and leak.num_turns == 0 and leak.finish_reason == "stop"
    assert probe.error is None, probe.error
    assert probe.result == {"ended": 401, "ended_code": "episode_ended", "foreign": 401,
                            "foreign_code": "invalid_api_key", "own": 200}


def test_bad_entry_is_a_clear_error(program_env, smol):
    from toolrl.errors import ToolrlError

    settings = LoopSettings(max_new_tokens=4)
    with pytest.raises(ToolrlError, match="has no function 'nope'") as err:
        run_episodes_sync([task("x", "nope")], 1, smol, smol.tokenizer, settings)
    assert "task 'x'" in str(err.value)
    bad = Task(id="y", messages=QUESTION, env="program", env_args={"entry": entry("raises"), "timeuot": 3})
    with pytest.raises(ToolrlError, match=r"unknown env_args \['timeuot'\]"):
        run_episodes_sync([bad], 1, smol, smol.tokenizer, settings)
