"""The memory environment through the agent loop: a real model, the real MiniLM embeddings, real rewards.

SmolLM2-135M does not call tools reliably, so the first turn of some samples
is forced to a `recall` (scored by the real model); the rest is sampled.
"""

from __future__ import annotations

import json

import pytest

from toolrl.env import EnvContext
from toolrl.rewards import compute_rewards
from toolrl.rollout.agent_loop import LoopSettings, run_episodes
from toolrl.rollout.testing import ForcedTurnsBackend, turn_of

pytestmark = pytest.mark.integration


@pytest.fixture
def plugins_on(plugin_manager):
    from toolrl_env_memory import plugin as env_memory
    from toolrl_rewards_text import plugin as rewards_text

    plugin_manager.register(env_memory, name="env_memory")
    plugin_manager.register(rewards_text, name="rewards_text")
    return plugin_manager


async def test_memory_episodes_recall_with_real_embeddings_and_score(smol, plugins_on):
    from toolrl.data import make_tasks

    tasks = make_tasks("memory", n=2, seed=0, difficulty="easy")
    by_id = {t.id: t for t in tasks}

    def force(request):
        task_id, rest = request.request_id.split("#")
        sample = int(rest.split("/")[0])
        if turn_of(request) == 1 and sample == 0:  # sample 0 recalls with the customer's own words
            query = by_id[task_id].messages[-1]["content"]
            return "<tool_call>\n" + json.dumps({"name": "recall", "arguments": {"query": query, "k": 3}}) + \
                "\n</tool_call>"
        return None  # sample 1 is the model's own, start to end

    backend = ForcedTurnsBackend(smol, smol.tokenizer, force, end_of_turn_id=smol.tokenizer.convert_tokens_to_ids(
        "<|im_end|>"))
    settings = LoopSettings(max_turns=2, max_new_tokens=48, max_total_tokens=1024, temperature=0.0, seed=0,
                            env_timeout=300.0)
    ctx = EnvContext()
    try:
        trajs = await run_episodes(tasks, n=2, backend=backend, tokenizer=smol.tokenizer, settings=settings, ctx=ctx)
    finally:
        await ctx.aclose()
    assert len(trajs) == 4 and all(t.error is None and not t.infra_error for t in trajs)
    recalled = [t for t in trajs if t.sample_index == 0]
    for traj in recalled:
        task = by_id[traj.task_id]
        tool_msg = traj.completion_messages[1]
        assert tool_msg["role"] == "tool" and tool_msg["content"].startswith("3 note(s) from memory")
        state = traj.env_state
        assert state["recalls"][0]["query"] == task.messages[-1]["content"] and len(state["recalls"][0]["hits"]) == 3
        unmasked = [i for i, m in zip(traj.response_ids, traj.loss_mask) if m == 0]
        assert state["recalls"][0]["hits"][0]["text"] in smol.tokenizer.decode(unmasked)
    results, metrics = await compute_rewards(
        trajs, tasks, [{"name": "memory_recall", "weight": 0.5}, {"name": "keyword_recall", "weight": 0.5}])
    for traj, result in zip(trajs, results):
        relevant = set(by_id[traj.task_id].metadata["relevant_memory_ids"])
        expected = len(relevant & set(traj.env_state["recalled_ids"])) / len(relevant)
        assert result.components["memory_recall"] == expected
    # the customer's own words find the needed note for these easy tasks
    assert [results[i].components["memory_recall"] for i, t in enumerate(trajs) if t.sample_index == 0] == [1.0] * 2
    assert 0.0 <= metrics["reward/keyword_recall"] <= 1.0
