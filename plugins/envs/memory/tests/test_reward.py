"""memory_recall: fraction of relevant notes retrieved; clear errors without its inputs."""

import pytest

from toolrl.errors import RewardError
from toolrl.types import Task
from toolrl_env_memory.reward import memory_recall

TASK = Task(id="m1", messages=({"role": "user", "content": "q"},))


def test_fraction_of_relevant_notes_retrieved():
    meta = {"relevant_memory_ids": ["s1-0", "s2-3"]}
    states = [{"recalled_ids": ["s1-0", "s2-3", "s1-1"]}, {"recalled_ids": ["s2-3"]}, {"recalled_ids": []}]
    assert memory_recall([None] * 3, metadata=[meta] * 3, env_states=states, tasks=[TASK] * 3) == [1.0, 0.5, 0.0]


def test_missing_inputs_are_errors_naming_the_task():
    with pytest.raises(RewardError, match="relevant_memory_ids") as exc:
        memory_recall([None], metadata=[{}], env_states=[{"recalled_ids": []}], tasks=[TASK])
    assert exc.value.where == "task m1"
    with pytest.raises(RewardError, match="environment's state"):
        memory_recall([None], metadata=[{"relevant_memory_ids": ["a"]}], env_states=[None], tasks=[TASK])


def test_contract_checks_accept_it(plugin_manager):
    from toolrl.rewards import prepare_rewards
    from toolrl_env_memory import plugin

    plugin_manager.register(plugin, name="env_memory")
    (prepared,) = prepare_rewards([{"name": "memory_recall"}])
    assert prepared.keywords == {"metadata", "env_states", "tasks"}
