"""The samples log (trainer.log_samples) of agent-program episodes: what the program returned (`result`),
its earlier segments, and a failed program's traceback. Real programs (plain `openai` client) against
SmolLM2 through the endpoint on 127.0.0.1; rewards by the plugin's own `result_match`."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolrl.metrics.samples import debug_line, read_samples, write_samples
from toolrl.rewards import compute_rewards_sync
from toolrl.rollout.agent_loop import LoopSettings, run_episodes_sync
from toolrl.types import Task
from toolrl_env_program.rewards import result_match

pytestmark = pytest.mark.integration

AGENTS = Path(__file__).parent / "programs" / "agents.py"


def task(tid: str, fn: str, answer: str = "x") -> Task:
    return Task(id=tid, messages=({"role": "user", "content": "Name a color."},), env="program",
                env_args={"entry": f"{AGENTS}:{fn}", "timeout": 600}, metadata={"answer": answer})


def test_samples_log_holds_the_programs_result(program_env, smol, tmp_path):
    settings = LoopSettings(temperature=1.0, max_new_tokens=8, max_total_tokens=256, seed=4)
    tasks = [task("chat", "chat_three_turns"), task("set", "returns_a_set"), task("broken", "raises"),
             task("forget", "forgetful")]
    trajs = run_episodes_sync(tasks, 1, smol, smol.tokenizer, settings)
    chat, as_set, broken, forget = trajs
    # a reward that reads the result: the first reply of `chat` is the expected answer of its task
    tasks[0] = task("chat", "chat_three_turns", answer=str(chat.result))
    results, _ = compute_rewards_sync(trajs, tasks, [{"name": "result_match", "weight": 1.0}],
                                      registry={"result_match": result_match})
    write_samples(tmp_path, 1, trajs, results, [0.5, 0.0, -0.5, 0.0], [t.task_id for t in trajs])
    step, rows = read_samples(tmp_path)
    assert step == 1 and [r["task_id"] for r in rows] == ["chat", "set", "broken", "forget"]
    by = {r["task_id"]: r for r in rows}

    # JSON results are logged as they were returned; the reward saw the same value
    assert isinstance(chat.result, list) and len(chat.result) == 3
    assert by["chat"]["result"] == chat.result and by["chat"]["reward"] == 1.0
    assert by["forget"]["result"] == forget.result
    # a result that is not JSON is logged as its repr (the reward still got the object itself)
    assert isinstance(as_set.result, set) and by["set"]["result"] == repr(as_set.result)
    # a failed program: no result, its traceback, reward 0
    assert by["broken"]["result"] is None and "ValueError: the program broke on purpose" in by["broken"]["error"]
    assert by["broken"]["finish_reason"] == "error" and by["broken"]["reward"] == 0.0
    # the earlier segments of a program that rewrote its history
    assert by["chat"]["segments"] == [] and len(forget.segments) == 1
    [s] = forget.segments
    assert by["forget"]["segments"] == [{"prompt_tokens": len(s.prompt_ids), "sampled_tokens": sum(s.loss_mask)}]
    # the debug line (rollout.debug) shows the result, shortened
    line = debug_line(by["chat"])
    assert "result=" in line and repr(chat.result)[:20] in line and len(line) < 400
    assert "result=" not in debug_line(by["broken"])
