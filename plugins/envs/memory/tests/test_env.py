"""The memory environment on the real MiniLM embedder: recall, remember, errors, persistence, state."""

import pytest

from toolrl.errors import ToolrlError
from toolrl.types import Task, ToolCall
from toolrl_env_memory.env import TOOLS, memory_env

SESSIONS = [
    {"date": "2024-03-02", "notes": ["My phone is a Pixel 7.", "The app logged me out again this morning."]},
    {"date": "2024-04-10", "notes": ["I'm allergic to peanuts.", "Please ship everything to my address in Lisbon."]},
]


def _task(**env_args):
    return Task(id="t1", messages=({"role": "user", "content": "hi"},), tools=TOOLS, env="memory",
                env_args={"user": "ana", "sessions": SESSIONS, **env_args})


@pytest.mark.parametrize("backend", ["faiss", "numpy"])
async def test_recall_finds_the_relevant_note(ctx, backend):
    task = _task(backend=backend)
    env = memory_env(ctx, **task.env_args)
    await env.reset(task)
    res = await env.step(ToolCall("recall", {"query": "which phone does the customer have", "k": 2}))
    assert not res.infra_error and res.info["status"] == "ok"
    first = res.text.splitlines()[1]
    assert "Pixel 7" in first and "session 1" in first and "2024-03-02" in first
    res = await env.step(ToolCall("recall", {"query": "food allergy"}))  # default k = 3
    assert res.text.splitlines()[1].endswith("I'm allergic to peanuts.")
    state = env.state()
    assert state["recalled_ids"][0] == "s1-0" and "s2-0" in state["recalled_ids"]
    assert [r["k"] for r in state["recalls"]] == [2, 3]
    assert state["num_memories"] == 4 and state["tool_errors"] == 0
    await env.close()


async def test_remember_then_recall(ctx):
    task = _task()
    env = memory_env(ctx, **task.env_args)
    await env.reset(task)
    res = await env.step(ToolCall("remember", {"text": "The customer's cat is called Miso."}))
    assert res.text == "Saved to memory (note new-0)."
    res = await env.step(ToolCall("recall", {"query": "name of the cat", "k": 1}))
    assert "Miso" in res.text
    state = env.state()
    assert state["remembered"] == [{"id": "new-0", "text": "The customer's cat is called Miso."}]
    assert state["recalled_ids"] == ["new-0"]


async def test_model_mistakes_are_tool_messages_not_exceptions(ctx):
    task = _task(max_k=4)
    env = memory_env(ctx, **task.env_args)
    await env.reset(task)
    cases = [
        (ToolCall("recall", {}), "non-empty \"query\""),
        (ToolCall("recall", {"query": "x", "k": "many"}), "whole number"),
        (ToolCall("remember", {"text": "  "}), "non-empty \"text\""),
        (ToolCall("search", {"q": "x"}), "Unknown tool 'search'"),
    ]
    for call, expected in cases:
        res = await env.step(call)
        assert expected in res.text and not res.infra_error
    res = await env.step(ToolCall("recall", {"query": "phone", "k": "50"}))  # clamped to max_k
    assert res.text.startswith("4 note(s)")
    assert env.state()["tool_errors"] == 4


async def test_memory_persists_across_sessions(ctx, tmp_path):
    first = _task(persist_dir=str(tmp_path))
    env = memory_env(ctx, **first.env_args)
    await env.reset(first)
    await env.step(ToolCall("remember", {"text": "Ana prefers delivery on Saturdays."}))
    await env.close()
    assert (tmp_path / "ana" / "memories.jsonl").exists()
    # the next session of the same user, with no earlier sessions in its task, still finds the note
    later = Task(id="t2", messages=({"role": "user", "content": "hi"},), tools=TOOLS, env="memory",
                 env_args={"user": "ana", "persist_dir": str(tmp_path)})
    env2 = memory_env(ctx, **later.env_args)
    await env2.reset(later)
    res = await env2.step(ToolCall("recall", {"query": "which day should we deliver", "k": 1}))
    assert "Saturdays" in res.text
    assert env2.state()["num_memories"] == 5  # 4 seeded notes + 1 remembered, all persisted


async def test_bad_env_args_fail_with_a_fix(ctx):
    with pytest.raises(ToolrlError, match="unknown argument") as exc:
        memory_env(ctx, user="a", top_k=3)
    assert "valid arguments" in exc.value.fix
    with pytest.raises(ToolrlError, match="1 <= k <= max_k"):
        memory_env(ctx, k=20, max_k=10)
    env = memory_env(ctx, sessions=[{"date": "x", "notes": "not a list"}])
    with pytest.raises(ToolrlError, match="'notes' list"):
        await env.reset(_task())
