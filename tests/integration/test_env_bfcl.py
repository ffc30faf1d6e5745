"""The bfcl environment through the agent loop: a real model, BFCL's real tool classes, the BFCL rewards.

Single-turn tasks run unforced (whatever SmolLM2 writes is scored by
`bfcl_ast`); multi-turn tasks force the first turn to the ground truth's calls
(sample 0) or to a wrong call (sample 1), and the loop executes them on BFCL's
simulated APIs, so `bfcl_state` must give 1 and 0.
"""

from __future__ import annotations

import pytest

from toolrl.env import EnvContext
from toolrl.rewards import compute_rewards
from toolrl.rollout.agent_loop import LoopSettings, run_episodes
from toolrl.rollout.testing import ForcedTurnsBackend, turn_of

pytestmark = pytest.mark.integration


@pytest.fixture
def plugins_on(plugin_manager):
    from toolrl_env_bfcl import plugin as env_bfcl

    plugin_manager.register(env_bfcl, name="env_bfcl")
    return plugin_manager


def _settings(**kw):
    base = dict(max_turns=2, max_new_tokens=64, max_total_tokens=4096, temperature=0.0, seed=0, env_timeout=300.0)
    base.update(kw)
    return LoopSettings(**base)


async def test_single_turn_tasks_unforced_are_scored_by_ast_match(smol, plugins_on):
    from toolrl.data import make_tasks

    tasks = make_tasks("bfcl", n=2, seed=0, categories="simple")
    trajs = await run_episodes(tasks, n=1, backend=smol, tokenizer=smol.tokenizer,
                               settings=_settings(max_new_tokens=40), ctx=EnvContext())
    assert all(t.error is None and not t.infra_error for t in trajs)
    for traj in trajs:
        assert traj.env_state["mode"] == "ast"
        # every call the loop parsed reached the environment (ast mode records them all)
        assert [c["name"] for c in traj.env_state["calls"]] == [c.name for c in traj.tool_calls]
        if traj.tool_calls:
            assert traj.finish_reason == "env_done" and traj.num_turns == 1
    results, metrics = await compute_rewards(trajs, tasks, [{"name": "bfcl_ast"}])
    assert all(r.total in (0.0, 1.0) for r in results) and "reward/bfcl_ast" in metrics


async def test_multi_turn_calls_run_on_bfcl_tools_and_the_state_is_scored(smol, plugins_on):
    from toolrl_env_bfcl.multi_turn import World, parse_call
    from toolrl_env_bfcl.suite import hermes_block

    from toolrl.chat.template import render_prompt
    from toolrl.data import make_tasks

    # the shortest first turn whose answer changes the file system (long prompts are slow on a CPU)
    pool = make_tasks("bfcl", n=120, seed=0, categories="multi_turn", turns="first", split="all")
    candidates = [t for t in pool if t.env_args["involved_classes"] == ["GorillaFileSystem"]
                  and any(c.startswith(("mkdir(", "touch(", "mv(", "cp(")) for c in t.metadata["ground_truth"])]
    tasks = [min(candidates, key=lambda t: len(render_prompt(smol.tokenizer, t)))]
    by_id = {t.id: t for t in tasks}

    def ground_truth_text(task):
        world = World(task.env_args["involved_classes"], task.env_args["initial_config"])
        blocks = []
        for text in task.metadata["ground_truth"]:
            name, args, kwargs = parse_call(text)
            blocks.append(hermes_block(name, world.keyword_args(name, args, kwargs)))
        return "\n".join(blocks)

    def force(request):
        task_id, rest = request.request_id.split("#")
        sample = int(rest.split("/")[0])
        if turn_of(request) != 1:
            return None
        if sample == 0:
            return ground_truth_text(by_id[task_id])
        return hermes_block("mkdir", {"dir_name": "not_what_was_asked"})

    backend = ForcedTurnsBackend(smol, smol.tokenizer, force, end_of_turn_id=smol.tokenizer.convert_tokens_to_ids(
        "<|im_end|>"))
    ctx = EnvContext()
    # one turn: exactly the forced calls run, so the scores are known
    trajs = await run_episodes(tasks, n=2, backend=backend, tokenizer=smol.tokenizer,
                               settings=_settings(max_turns=1, max_new_tokens=512, max_total_tokens=8192), ctx=ctx)
    assert all(t.error is None and not t.infra_error for t in trajs), [t.error for t in trajs]
    for traj in trajs:
        expected = len(by_id[traj.task_id].metadata["ground_truth"]) if traj.sample_index == 0 else 1
        assert [c["status"] for c in traj.env_state["calls"]] == ["ok"] * expected
        tool_messages = [m for m in traj.completion_messages if m["role"] == "tool"]
        assert [m["content"] for m in tool_messages] == [c["result"] for c in traj.env_state["calls"]]
        assert traj.finish_reason == "max_turns"
    results, _ = await compute_rewards(trajs, tasks, [{"name": "bfcl_state"}])
    assert [r.total for r in results] == [1.0, 0.0]
