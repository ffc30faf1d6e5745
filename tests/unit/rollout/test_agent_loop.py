"""The agent loop on a tiny random Llama with SmolLM2's real tokenizer.

Tool calls are forced with `ForcedTurnsBackend` (the random model cannot write them): forced
turns are scripted text, scored by the real model; every other turn is sampled.
"""

import asyncio
import logging
import time

import pytest

from toolrl.chat.template import ChatFormat
from toolrl.config import Config
from toolrl.errors import UnknownNameError
from toolrl.hookspecs import hookimpl
from toolrl.rollout.agent_loop import LoopSettings, derive_seed, run_episodes, run_episodes_sync
from toolrl.rollout.testing import ForcedTurnsBackend, turn_of
from toolrl.types import Task, ToolResult

TOOLS = ({"type": "function", "function": {"name": "add", "description": "Add two integers",
                                           "parameters": {"type": "object", "properties": {
                                               "a": {"type": "integer"}, "b": {"type": "integer"}}}}},)
CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'


class AddEnv:
    """Sync environment: adds; `behaviour` injects the faults under test."""

    closed: list = []

    def __init__(self, ctx, behaviour="ok", hang_s=5.0):
        self.behaviour, self.hang_s, self.calls = behaviour, hang_s, []

    def reset(self, task):
        if self.behaviour == "reset_raises":
            raise RuntimeError("no sandbox available")

    def step(self, call):
        self.calls.append(call.name)
        if self.behaviour == "raise":
            raise ValueError("division by zero inside the env")
        if self.behaviour == "hang":
            time.sleep(self.hang_s)
        if self.behaviour == "infra":
            return ToolResult(text="container died", infra_error=True)
        if self.behaviour == "wrong_type":
            return "5"
        a, b = call.arguments.get("a", 0), call.arguments.get("b", 0)
        return ToolResult(text=str(a + b), done=self.behaviour == "done",
                          info={"status": "error"} if self.behaviour == "tool_error" else {})

    def state(self):
        return {"calls": list(self.calls)}

    def close(self):
        AddEnv.closed.append(self)


class AsyncHangEnv:
    def __init__(self, ctx):
        pass

    async def reset(self, task):
        pass

    async def step(self, call):
        await asyncio.sleep(30)

    def state(self):
        return None

    async def close(self):
        pass


class EnvPlugin:
    @hookimpl
    def register_environments(self, register):
        register("add", AddEnv)
        register("async_hang", AsyncHangEnv)
        register("broken_factory", lambda ctx, **kw: 1 / 0)


@pytest.fixture
def envs(plugin_manager):
    plugin_manager.register(EnvPlugin(), name="test-envs")
    AddEnv.closed = []
    return plugin_manager


def task(tid="t0", env="add", **env_args):
    return Task(id=tid, messages=({"role": "user", "content": "What is 2+3?"},), tools=TOOLS, env=env,
                env_args=env_args)


def forced(tiny_backend, script):
    """Force turn k's text to script[k] (1-based); other turns are sampled."""
    eot = ChatFormat.of(tiny_backend.tokenizer).info.end_of_turn_ids[0]
    return ForcedTurnsBackend(tiny_backend, tiny_backend.tokenizer, lambda r: script.get(turn_of(r)), eot)


SETTINGS = LoopSettings(max_turns=3, max_new_tokens=40, max_total_tokens=400, temperature=1.0, env_timeout=1.0, seed=5)


def run(backend, tasks, n=1, settings=SETTINGS, **kw):
    return run_episodes_sync(tasks, n, backend, backend.tokenizer, settings, **kw)


def test_single_turn_task_is_one_sampled_turn(tiny_backend, envs):
    [t] = run(tiny_backend, [task(env=None)])
    assert t.num_turns == 1 and t.finish_reason in ("stop", "length")
    assert set(t.loss_mask) == {1} and len(t.response_ids) <= 40
    assert t.prompt_ids == tuple(ChatFormat.of(tiny_backend.tokenizer).prompt_ids(task().messages, TOOLS))
    assert [m["role"] for m in t.completion_messages] == ["assistant"]


def test_tool_turn_appends_masked_tool_tokens_and_keeps_sampled_ids(tiny_backend, envs):
    backend = forced(tiny_backend, {1: CALL})
    [t] = run(backend, [task()])
    assert t.tool_calls[0].name == "add" and t.tool_calls[0].id == "call_1_0"
    assert [m["role"] for m in t.completion_messages][:3] == ["assistant", "tool", "assistant"]
    assert t.completion_messages[1]["content"] == "5" and t.completion_messages[1]["tool_call_id"] == "call_1_0"
    assert t.env_state == {"calls": ["add"]} and len(AddEnv.closed) == 1
    # the ids: prompt + forced turn (mask 1) + tool suffix (mask 0) + sampled turn(s) (mask 1)
    fmt = ChatFormat.of(tiny_backend.tokenizer)
    call_ids = fmt.encode(CALL) + [fmt.info.end_of_turn_ids[0]]
    n1 = len(call_ids)
    assert list(t.response_ids[:n1]) == call_ids and set(t.loss_mask[:n1]) == {1}
    suffix = fmt.tool_suffix_ids(call_ids, [{"role": "tool", "content": "5"}], TOOLS)
    assert list(t.response_ids[n1 : n1 + len(suffix)]) == suffix
    assert set(t.loss_mask[n1 : n1 + len(suffix)]) == {0} and set(t.logprobs[n1 : n1 + len(suffix)]) == {0.0}
    assert t.loss_mask[n1 + len(suffix)] == 1
    # up to the sampled turn they equal the template's rendering of the messages; the random
    # model's sampled ids are kept verbatim (re-encoding their text would give other ids: the
    # drift this loop avoids), so the full equality is checked with real models in integration
    full = fmt.encode(fmt.render_text(t.messages, TOOLS))
    ids = list(t.prompt_ids + t.response_ids)
    upto = len(t.prompt_ids) + n1 + len(suffix)
    assert full[:upto] == ids[:upto]


def test_malformed_call_is_answered_and_counted(tiny_backend, envs):
    backend = forced(tiny_backend, {1: '<tool_call>{"name": "add", "arguments": {"a": 2,}}</tool_call>', 2: CALL})
    [t] = run(backend, [task()])
    assert t.malformed_tool_calls == 1
    msg = t.completion_messages[1]
    assert msg["role"] == "tool" and msg["content"].startswith("Error: your tool call could not be parsed")
    assert t.completion_messages[3]["content"] == "5"  # the loop went on; the next call worked
    assert t.num_turns >= 2


@pytest.mark.parametrize(
    "env_args, expect",
    [
        ({"behaviour": "raise"}, "ValueError: division by zero inside the env"),
        ({"behaviour": "hang", "hang_s": 3.0}, "did not finish within rollout.env_timeout=1s"),
        ({"behaviour": "reset_raises"}, "environment reset (add) raised RuntimeError: no sandbox available"),
        ({"behaviour": "wrong_type"}, "returned str, not a ToolResult"),
    ],
)
def test_env_failures_end_only_their_trajectory(tiny_backend, envs, env_args, expect):
    backend = forced(tiny_backend, {1: CALL})
    t0 = time.monotonic()
    bad, good = run(backend, [task("bad", **env_args), task("good")])
    assert time.monotonic() - t0 < 20
    assert bad.finish_reason == "error" and expect in bad.error and not bad.infra_error
    assert good.finish_reason != "error" and good.error is None
    assert len(AddEnv.closed) == 2  # closed even after the failure


def test_async_env_hanging_past_the_timeout(tiny_backend, envs):
    backend = forced(tiny_backend, {1: CALL})
    [t] = run(backend, [Task(id="h", messages=task().messages, tools=TOOLS, env="async_hang")])
    assert t.finish_reason == "error" and "did not finish within" in t.error


def test_infrastructure_error_marks_the_trajectory(tiny_backend, envs):
    [t] = run(forced(tiny_backend, {1: CALL}), [task(behaviour="infra")])
    assert t.infra_error and t.finish_reason == "error" and "container died" in t.error


def test_factory_failure_and_unknown_env(tiny_backend, envs):
    [t] = run(tiny_backend, [task(env="broken_factory")])
    assert t.finish_reason == "error" and "ZeroDivisionError" in t.error
    with pytest.raises(UnknownNameError):
        run(tiny_backend, [task(env="no_such_env")])


def test_env_done_max_turns_and_budget(tiny_backend, envs):
    always = forced(tiny_backend, {1: CALL, 2: CALL, 3: CALL})
    [done] = run(always, [task(behaviour="done")])
    assert done.finish_reason == "env_done" and done.num_turns == 1
    # no generation prompt after the last tool message: the trajectory ends with the tool turn closed
    assert tiny_backend.tokenizer.decode(done.response_ids).endswith("<|im_start|>tool\n5<|im_end|>\n")
    [maxed] = run(always, [task(behaviour="tool_error")])
    assert maxed.finish_reason == "max_turns" and maxed.num_turns == 3 and maxed.tool_errors == 3
    # the budget counts sampled and tool tokens: the call fits (34 tokens), its tool result would not
    [short] = run(always, [task()], settings=LoopSettings(max_turns=3, max_new_tokens=40, max_total_tokens=40))
    assert short.finish_reason == "length" and len(short.response_ids) == 34 and short.num_turns == 1
    [cut] = run(always, [task()], settings=LoopSettings(max_turns=3, max_new_tokens=40, max_total_tokens=20))
    assert cut.finish_reason == "length" and len(cut.response_ids) == 20 and cut.tool_calls == ()


def test_task_major_order_and_seeds(tiny_backend, envs):
    tasks = [task("a", env=None), task("b", env=None)]
    first = run(tiny_backend, tasks, n=3)
    assert [(t.task_id, t.sample_index) for t in first] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)]
    again = run(tiny_backend, tasks, n=3)
    assert [t.response_ids for t in first] == [t.response_ids for t in again]
    assert len({t.response_ids for t in first[:3]}) > 1  # samples of one task differ
    later = run(tiny_backend, tasks, n=3, step=1)
    assert [t.response_ids for t in later] != [t.response_ids for t in first]
    assert derive_seed(0, 0, "a", 0) != derive_seed(0, 0, "a", 1) and derive_seed(1, 2) == derive_seed(1, 2)


def test_debug_mode_logs_every_sample(tiny_backend, envs, caplog):
    settings = LoopSettings(max_turns=2, max_new_tokens=40, debug=True)
    with caplog.at_level(logging.INFO, logger="toolrl.rollout.agent_loop"):
        run(forced(tiny_backend, {1: CALL}), [task()], settings=settings)
    text = caplog.text
    assert "[rollout debug] task=t0 sample=0" in text and "prompt: <|im_start|>system" in text
    assert "tool call call_1_0: add({'a': 2, 'b': 3})" in text and "tool: 5" in text
    assert "logprobs of sampled tokens: [" in text


def test_settings_from_config_and_sync_wrapper_guard():
    cfg = Config.model_validate({"rollout": {"max_turns": 2, "temperature": 0.5, "stop": ["###"]},
                                 "envs": {"add": {"behaviour": "done"}}})
    s = LoopSettings.from_config(cfg.rollout, seed=9, envs=cfg.envs)
    assert (s.max_turns, s.temperature, s.stop, s.seed) == (2, 0.5, ("###",), 9)
    assert s.env_defaults == {"add": {"behaviour": "done"}}

    async def inside():
        with pytest.raises(RuntimeError, match="use `await run_episodes"):
            run_episodes_sync([], 1, None, None, s)

    asyncio.run(inside())


async def test_config_env_defaults_reach_the_factory(tiny_backend, envs):
    settings = LoopSettings(max_turns=2, max_new_tokens=40, env_defaults={"add": {"behaviour": "done"}})
    [t] = await run_episodes([task()], 1, forced(tiny_backend, {1: CALL}), tiny_backend.tokenizer, settings)
    assert t.finish_reason == "env_done"


def test_more_episodes_than_the_backend_queue_holds(tiny_model_dir, envs):
    """A full backend queue makes the loop wait, not fail: 12 episodes through a queue of 2."""
    from toolrl.rollout.base import BackendSettings
    from toolrl.rollout.hf_backend import HFBackend

    backend = HFBackend(BackendSettings(model_path=str(tiny_model_dir), device="cpu", max_batch_size=2,
                                        extra={"max_queue": 2}))
    try:
        trajs = run(backend, [task(f"t{i}", env=None) for i in range(6)], n=2,
                    settings=LoopSettings(max_turns=1, max_new_tokens=6))
        assert len(trajs) == 12 and all(t.error is None for t in trajs)
    finally:
        backend.close()


def test_prompt_longer_than_the_context_ends_that_episode(tiny_backend, envs):
    long = Task(id="long", messages=({"role": "user", "content": "word " * 600},))
    bad, ok = run(tiny_backend, [long, task("short", env=None)])
    assert bad.finish_reason == "error" and "context window" in bad.error and ok.error is None
