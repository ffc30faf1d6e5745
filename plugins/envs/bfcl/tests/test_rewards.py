"""bfcl_ast and bfcl_state on the real BFCL data: the ground truth scores 1, wrong or missing work scores 0."""

import pytest

from toolrl.errors import RewardError
from toolrl.types import ToolCall
from toolrl_env_bfcl.bfcl_data import SINGLE_TURN
from toolrl_env_bfcl.env import bfcl_env
from toolrl_env_bfcl.multi_turn import parse_call
from toolrl_env_bfcl.rewards import bfcl_ast, bfcl_state
from toolrl_env_bfcl.suite import make_bfcl_tasks

from .helpers import answer_calls


@pytest.mark.parametrize("category", list(SINGLE_TURN))
def test_bfcl_ast_accepts_the_possible_answer_and_rejects_a_changed_one(category):
    from toolrl_env_bfcl.bfcl_data import load_category

    n = min(60, len([e for e in load_category(category)]))
    tasks = list(make_bfcl_tasks(n, seed=0, categories=category, split="all"))
    right = [{"calls": answer_calls(t.metadata["ground_truth"])} for t in tasks]
    assert bfcl_ast([None] * n, tasks=tasks, metadata=[t.metadata for t in tasks], env_states=right) == [1.0] * n
    wrong = []
    for state in right:
        calls = [dict(c) for c in state["calls"]]
        if calls:
            calls = calls[:-1]  # one call missing
        else:
            calls = [{"name": "anything", "arguments": {}}]  # irrelevance: any call is wrong
        wrong.append({"calls": calls})
    assert bfcl_ast([None] * n, tasks=tasks, metadata=[t.metadata for t in tasks], env_states=wrong) == [0.0] * n


def test_bfcl_ast_falls_back_to_the_trajectory_calls():
    class Traj:
        tool_calls = (ToolCall("math.factorial", {"number": 5}),)

    (task,) = [t for t in make_bfcl_tasks(400, seed=0, categories="simple", split="all")
               if t.metadata["bfcl_id"] == "simple_python_1"]
    assert bfcl_ast([Traj()], tasks=[task], metadata=[task.metadata], env_states=[None]) == [1.0]
    with pytest.raises(RewardError, match="ground_truth"):
        bfcl_ast([Traj()], tasks=[task], metadata=[{}], env_states=[None])


async def _run(task, calls):
    env = bfcl_env(None, **task.env_args)
    await env.reset(task)
    for text in calls:
        name, args, kwargs = parse_call(text)
        await env.step(ToolCall(name, env.world.keyword_args(name, args, kwargs)))
    return env.state()


async def test_bfcl_state_on_every_multi_turn_task():
    tasks = list(make_bfcl_tasks(734, seed=0, categories="multi_turn", split="all"))
    meta = [t.metadata for t in tasks]
    right = [await _run(t, t.metadata["ground_truth"]) for t in tasks]
    assert bfcl_state([None] * len(tasks), tasks=tasks, metadata=meta, env_states=right) == [1.0] * len(tasks)
    idle = [await _run(t, []) for t in tasks]
    scores = bfcl_state([None] * len(tasks), tasks=tasks, metadata=meta, env_states=idle)
    assert all(s == (0.0 if t.metadata["ground_truth"] else 1.0) for s, t in zip(scores, tasks))
    # without the response check, read-only turns pass by doing nothing (why BFCL checks responses)
    lax = bfcl_state([None] * len(tasks), tasks=tasks, metadata=meta, env_states=idle, check_responses=False)
    assert sum(lax) > sum(scores)


async def test_bfcl_state_partial_credit_and_errors():
    task = next(t for t in make_bfcl_tasks(734, seed=0, categories="multi_turn", split="all")
                if len(t.env_args["involved_classes"]) == 2 and len(t.metadata["ground_truth"]) >= 2)
    state = await _run(task, [])
    assert 0.0 <= bfcl_state([None], tasks=[task], metadata=[task.metadata], env_states=[state], partial=True)[0] < 1.0
    with pytest.raises(RewardError, match="multi-turn state"):
        bfcl_state([None], tasks=[task], metadata=[task.metadata], env_states=[{"mode": "ast", "calls": []}])
    with pytest.raises(RewardError, match="list of call strings"):
        bfcl_state([None], tasks=[task], metadata=[{"ground_truth": [{"f": {}}]}], env_states=[state])


async def test_bfcl_dispatches_by_kind_and_the_specific_rewards_refuse_the_other_kind():
    from toolrl_env_bfcl.rewards import bfcl

    single = list(make_bfcl_tasks(3, seed=0, categories="simple,parallel", split="all"))
    multi = [t for t in make_bfcl_tasks(40, seed=0, categories="multi_turn", split="all")
             if t.metadata["ground_truth"]][:2]
    tasks = [single[0], multi[0], single[1], multi[1]]
    states = [{"calls": answer_calls(tasks[0].metadata["ground_truth"])}, await _run(multi[0], []),
              {"calls": []}, await _run(multi[1], multi[1].metadata["ground_truth"])]
    meta = [t.metadata for t in tasks]
    assert bfcl([None] * 4, tasks=tasks, metadata=meta, env_states=states) == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(RewardError, match="bfcl_state for multi-turn"):
        bfcl_ast([None], tasks=[multi[0]], metadata=[multi[0].metadata], env_states=[states[1]])
    with pytest.raises(RewardError, match="bfcl_ast for single-turn"):
        bfcl_state([None], tasks=[single[0]], metadata=[single[0].metadata], env_states=[{"instances": {}}])
