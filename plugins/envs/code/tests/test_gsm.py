"""The gsm suite: gsm_symbolic word problems asking for `#### N`, scored by gsm8k_exact."""

import pytest

from toolrl.data import make_tasks
from toolrl_env_code.gsm import make_gsm_tasks


def test_gsm_tasks_ask_for_hashes_and_offer_the_python_tool():
    tasks = list(make_gsm_tasks(6, seed=0))
    assert [t.id for t in tasks] == [f"gsm-s0-{i:05d}" for i in range(6)]
    for t in tasks:
        assert t.env == "python" and t.tools[0]["function"]["name"] == "python"
        assert "after four hashes" in t.messages[0]["content"]
        assert t.metadata["suite"] == "gsm" and t.metadata["source"] == "reasoning_gym/gsm_symbolic"
        assert float(t.metadata["answer"]) == float(t.metadata["answer"])  # numeric
        assert t.messages[-1]["role"] == "user" and len(t.messages[-1]["content"]) > 40  # a word problem
    assert [t.to_dict() for t in make_gsm_tasks(6, seed=0)] == [t.to_dict() for t in tasks]
    assert [t.metadata["answer"] for t in make_gsm_tasks(6, seed=1)] != [t.metadata["answer"] for t in tasks]
    no_tool = list(make_gsm_tasks(2, seed=0, tool=False, shots=0))
    assert no_tool[0].env is None and no_tool[0].tools == () and len(no_tool[0].messages) == 2


def test_gsm8k_exact_scores_the_reference_answer(plugin_manager):
    pytest.importorskip("toolrl_rewards_math")
    from toolrl.rewards import compute_rewards_sync
    from toolrl.types import Trajectory

    from toolrl_rewards_math.rewards import gsm8k_exact

    plugin_manager.register(__import__("toolrl_env_code.plugin", fromlist=["x"]), name="env-code")
    tasks = make_tasks("gsm", 3, seed=2)

    def traj(task, text):
        return Trajectory(task_id=task.id, sample_index=0, prompt_ids=(1,), response_ids=(2,), loss_mask=(1,),
                          logprobs=(0.0,), messages=(*task.messages, {"role": "assistant", "content": text}),
                          num_prompt_messages=len(task.messages))

    trajs = [traj(tasks[0], f"So the total is\n#### {tasks[0].metadata['answer']}"),
             traj(tasks[1], "#### 123456789"), traj(tasks[2], f"the answer is {tasks[2].metadata['answer']}")]
    results, _ = compute_rewards_sync(trajs, tasks, [{"name": "gsm8k_exact"}], registry={"gsm8k_exact": gsm8k_exact})
    assert [r.total for r in results] == [1.0, 0.0, 0.0]  # strict: only a number after #### counts
