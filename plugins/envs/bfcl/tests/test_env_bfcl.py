"""The bfcl environment: ast mode records and ends; multi_turn mode executes for real on a replayed world."""

import pytest

from toolrl.errors import ToolrlError
from toolrl.types import ToolCall
from toolrl_env_bfcl.env import bfcl_env
from toolrl_env_bfcl.suite import make_bfcl_tasks


async def test_ast_mode_records_calls_and_ends_the_episode():
    (task,) = make_bfcl_tasks(1, seed=0, categories="simple", split="all")
    env = bfcl_env(None, **task.env_args)
    await env.reset(task)
    name = task.tools[0]["function"]["name"]
    res = await env.step(ToolCall(name, {"x": 1}))
    assert res.done and res.text == f"{name} was called."
    res = await env.step(ToolCall("nope", {}))
    assert "There is no function 'nope'" in res.text
    assert env.state() == {"mode": "ast", "calls": [
        {"name": name, "arguments": {"x": 1}, "status": "recorded"},
        {"name": "nope", "arguments": {}, "status": "unknown_function"}]}


async def test_multi_turn_mode_replays_history_and_executes_calls():
    tasks = [t for t in make_bfcl_tasks(734, seed=0, categories="multi_turn", split="all")
             if t.metadata["turn"] == 1 and t.env_args["involved_classes"] == ["GorillaFileSystem"]
             and any(c.startswith(("mkdir(", "touch(", "mv(")) for c in t.env_args["replay"])]
    task = tasks[0]
    fresh = bfcl_env(None, **{**task.env_args, "replay": []})
    await fresh.reset(task)
    env = bfcl_env(None, **task.env_args)
    await env.reset(task)
    assert env.state()["instances"] != fresh.state()["instances"]  # the earlier turn's calls were replayed
    res = await env.step(ToolCall("pwd", {}))
    assert res.info["status"] == "ok" and "current_working_directory" in res.text
    res = await env.step(ToolCall("cd", {"folder": "no-such-folder"}))
    assert res.info["status"] == "ok" and "error" in res.text.lower()  # the API's own error comes back as data
    res = await env.step(ToolCall("cd", {"directory": "x"}))
    assert res.info["status"] == "error" and res.text.startswith("Error: cd:")
    res = await env.step(ToolCall("post_tweet", {"content": "hi"}))  # not offered in this task
    assert res.info["status"] == "error" and "unknown function" in res.text
    assert [c["status"] for c in env.state()["calls"]] == ["ok", "ok", "error", "error"]


async def test_bad_env_args():
    with pytest.raises(ToolrlError, match="unknown mode"):
        bfcl_env(None, mode="exec")
    with pytest.raises(ToolrlError, match="needs involved_classes"):
        bfcl_env(None, mode="multi_turn")
    with pytest.raises(ToolrlError, match="unknown argument"):
        bfcl_env(None, mode="ast", classes=[])
    (task,) = [t for t in make_bfcl_tasks(50, seed=0, categories="multi_turn", split="all") if t.env_args["replay"]][:1]
    env = bfcl_env(None, **{**task.env_args, "replay": ["no_such_function(x=1)"]})
    with pytest.raises(ToolrlError, match="replaying earlier turn call #0"):
        await env.reset(task)
