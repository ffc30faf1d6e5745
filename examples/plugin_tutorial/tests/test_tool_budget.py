import pytest

from toolrl.errors import RewardError
from toolrl.rewards import compute_rewards_sync
from toolrl.types import Task, ToolCall, Trajectory

from toolrl_tool_budget import tool_budget


def episode(task_id, n_calls):
    calls = tuple(ToolCall(name="search", arguments={"q": str(i)}) for i in range(n_calls))
    return Trajectory(task_id=task_id, sample_index=0, prompt_ids=(1,), response_ids=(2,), loss_mask=(1,),
                      logprobs=(0.0,), messages=({"role": "user", "content": "hi"},), tool_calls=calls)


def test_penalty_per_extra_call():
    task = Task(id="t", messages=({"role": "user", "content": "hi"},))
    trajs = [episode("t", n) for n in (0, 2, 3, 4, 9)]
    assert tool_budget(trajs, tasks=[task] * 5) == [1.0, 1.0, 0.75, 0.5, 0.0]


def test_task_budget_overrides_and_bad_budget_names_the_task():
    ok = Task(id="ok", messages=({"role": "user", "content": "hi"},), metadata={"budget": 0})
    assert tool_budget([episode("ok", 1)], tasks=[ok]) == [0.75]
    bad = Task(id="bad", messages=({"role": "user", "content": "hi"},), metadata={"budget": "two"})
    with pytest.raises(RewardError, match="task 'bad'"):
        tool_budget([episode("bad", 1)], tasks=[bad])


def test_through_toolrl_composition():
    task = Task(id="t", messages=({"role": "user", "content": "hi"},))
    results, metrics = compute_rewards_sync(
        [episode("t", 1), episode("t", 5)], [task],
        [{"name": "tool_budget", "weight": 2.0, "args": {"budget": 1}}],
        registry={"tool_budget": tool_budget},
    )
    assert [r.total for r in results] == [2.0, 0.0]
    assert metrics["reward/tool_budget"] == 0.5
