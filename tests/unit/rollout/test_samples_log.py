"""Samples you can read: real trajectories from the agent loop (tiny Llama, real tokenizer, a real tool),
real rewards and GRPO advantages, written to samples/step_N.jsonl and shown by `toolrl inspect`."""

import json
import subprocess
import sys

import pytest
import torch

from toolrl.algorithms.advantages import AdvantageInput, grpo
from toolrl.chat.template import ChatFormat
from toolrl.config import AlgorithmConfig
from toolrl.errors import ToolrlError
from toolrl.hookspecs import hookimpl
from toolrl.metrics.inspect_samples import render, select
from toolrl.metrics.samples import (debug_line, logged_steps, per_sample_advantages, read_samples, samples_path,
                                    write_samples)
from toolrl.rewards import compute_rewards_sync
from toolrl.rollout.agent_loop import LoopSettings, run_episodes_sync
from toolrl.rollout.testing import ForcedTurnsBackend, turn_of
from toolrl.types import Task, ToolResult

TOOLS = ({"type": "function", "function": {"name": "mul", "description": "Multiply two integers", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}},)


class MulEnv:
    def __init__(self, ctx):
        pass

    def reset(self, task):
        pass

    def step(self, call):
        return ToolResult(text=str(call.arguments["a"] * call.arguments["b"]))

    def state(self):
        return None

    def close(self):
        pass


class MulPlugin:
    @hookimpl
    def register_environments(self, register):
        register("mul", MulEnv)


def used_tool(trajectories, **kwargs):
    return [1.0 if t.tool_calls else 0.0 for t in trajectories]


def short(trajectories, **kwargs):
    return [1.0 / (1 + t.num_sampled_tokens) for t in trajectories]


@pytest.fixture(scope="module")
def step_data(tiny_backend, tmp_path_factory):
    from toolrl import plugins

    pm = plugins.reset(load_entrypoints=False)
    pm.register(MulPlugin(), name="mul-env")
    try:
        eot = ChatFormat.of(tiny_backend.tokenizer).info.end_of_turn_ids[0]
        call = '<tool_call>\n{"name": "mul", "arguments": {"a": 6, "b": 7}}\n</tool_call>'
        # sample 0 and 2 of each task call the tool on turn 1; the others answer as the model samples
        backend = ForcedTurnsBackend(tiny_backend, tiny_backend.tokenizer,
                                     lambda r: call if turn_of(r) == 1 and r.request_id.split("#")[1][0] in "02"
                                     else None, eot)
        tasks = [Task(id=f"q{i}", messages=({"role": "user", "content": f"What is 6*7+{i}?"},), tools=TOOLS,
                      env="mul") for i in range(2)]
        settings = LoopSettings(max_turns=2, max_new_tokens=40, max_total_tokens=400, temperature=1.0, seed=3)
        trajs = run_episodes_sync(tasks, 4, backend, tiny_backend.tokenizer, settings)
        results, _ = compute_rewards_sync(trajs, tasks, [{"name": "used_tool", "weight": 1.0},
                                                         {"name": "short", "weight": 0.5}],
                                          registry={"used_tool": used_tool, "short": short})
        group_ids = [t.task_id for t in trajs]
        width = max(len(t.response_ids) for t in trajs)
        mask = torch.tensor([list(t.loss_mask) + [0] * (width - len(t.loss_mask)) for t in trajs], dtype=torch.float32)
        scores = torch.tensor([r.total for r in results])
        adv = grpo(AdvantageInput(scores=scores, response_mask=mask, group_ids=group_ids,
                                  valid=torch.ones(len(trajs), dtype=torch.bool)), AlgorithmConfig()).advantages
        run_dir = tmp_path_factory.mktemp("run")
        advantages = per_sample_advantages(adv, mask)
        write_samples(run_dir, 3, trajs, results, advantages, group_ids)
        return run_dir, trajs, results, advantages
    finally:
        plugins.reset(load_entrypoints=False)


def test_written_records_hold_conversation_rewards_and_advantages(step_data):
    run_dir, trajs, results, advantages = step_data
    assert logged_steps(run_dir) == [3] and samples_path(run_dir, 3).name == "step_000003.jsonl"
    step, rows = read_samples(run_dir)
    assert step == 3 and len(rows) == len(trajs) == 8
    for row, t, r, a in zip(rows, trajs, results, advantages):
        assert (row["task_id"], row["sample_index"], row["weight_version"]) == (t.task_id, t.sample_index, 0)
        assert row["reward"] == pytest.approx(r.total) and row["components"] == pytest.approx(dict(r.components))
        assert row["advantage"] == pytest.approx(a)
        assert row["sampled_tokens"] == t.num_sampled_tokens and row["messages"] == [dict(m) for m in t.messages]
    called = [row for row in rows if row["tool_calls"]]
    assert len(called) == 4 and all(row["tool_calls"] == [{"name": "mul", "arguments": {"a": 6, "b": 7}}]
                                    for row in called)
    tool_msgs = [m for m in called[0]["messages"] if m["role"] == "tool"]
    assert tool_msgs and tool_msgs[0]["content"] == "42"  # the tool's real result
    # GRPO: within a group, a higher reward has the higher advantage
    for g in ("q0", "q1"):
        grp = sorted((row for row in rows if row["group"] == g), key=lambda row: row["reward"])
        assert grp[0]["advantage"] < 0 < grp[-1]["advantage"]
    line = debug_line(rows[0])
    assert "reward=" in line and "used_tool=" in line and "advantage=" in line


def test_cap_keeps_whole_groups(step_data, tmp_path):
    _, trajs, results, advantages = step_data
    group_ids = [t.task_id for t in trajs]
    write_samples(tmp_path, 1, trajs, results, advantages, group_ids, max_samples=6)
    _, rows = read_samples(tmp_path, 1)
    assert [r["group"] for r in rows] == ["q0"] * 4  # 6 would split group q1
    write_samples(tmp_path, 2, trajs, results, advantages, group_ids, max_samples=3)
    assert len(read_samples(tmp_path, 2)[1]) == 3  # a group larger than the cap is cut
    with pytest.raises(ToolrlError, match="one reward, advantage and group id per trajectory"):
        write_samples(tmp_path, 4, trajs, results[:-1])


def test_inspect_orders_and_renders(step_data):
    from rich.console import Console

    run_dir, *_ = step_data
    _, rows = read_samples(run_dir)
    worst, best = select(rows, "worst", 2), select(rows, "best", 2)
    assert [r["reward"] for r in worst] == sorted(r["reward"] for r in rows)[:2]
    assert [r["reward"] for r in best] == sorted((r["reward"] for r in rows), reverse=True)[:2]
    console = Console(record=True, width=160)
    render(run_dir, order="best", n=1, console=console)
    out = console.export_text()
    top = best[0]
    assert f"{top['task_id']}#{top['sample_index']}" in out and f"{top['reward']:.3f}" in out
    assert 'tool calls: mul({"a": 6, "b": 7})' in out and "tool mul: 42" in out
    assert "used_tool" in out and "short" in out


def test_inspect_command_line(step_data):
    run_dir, *_ = step_data
    r = subprocess.run([sys.executable, "-m", "toolrl.cli", "inspect", str(run_dir), "--worst", "--n", "1"],
                       capture_output=True, text=True, timeout=120, env={"COLUMNS": "160", "PATH": ""})
    assert r.returncode == 0, r.stderr
    _, rows = read_samples(run_dir)
    low = select(rows, "worst", 1)[0]
    assert f"{low['task_id']}#{low['sample_index']}" in r.stdout and "step" in r.stdout
    bad = subprocess.run([sys.executable, "-m", "toolrl.cli", "inspect", str(run_dir), "--step", "9"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "use one of the logged steps: 3" in bad.stderr



def test_the_training_step_writes_and_logs_its_samples(step_data, tmp_path, caplog):
    """`toolrl.trainer.step.log_samples`, as train_step calls it, on a real batch built from the trajectories."""
    import logging

    from toolrl.config import load_config
    from toolrl.trainer.batch import build_batch
    from toolrl.trainer.step import log_samples

    _, trajs, results, advantages = step_data
    group_ids = [t.task_id for t in trajs]
    batch = build_batch(trajs, group_ids, [True] * len(trajs), 0)
    batch.extras["advantages"] = torch.tensor(advantages)[:, None] * batch.response_mask
    cfg = load_config(data={"trainer": {"output_dir": str(tmp_path), "log_samples_max": 4},
                            "rollout": {"debug": True}, "rewards": [{"name": "x"}]})
    with caplog.at_level(logging.INFO, logger="toolrl.trainer.step"):
        log_samples(5, cfg, trajs, results, batch, group_ids)
    step, rows = read_samples(tmp_path)
    assert step == 5 and len(rows) == 4 and [r["advantage"] for r in rows] == pytest.approx(advantages[:4])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[step 5]")]
    assert len(lines) == len(trajs) and all("reward=" in x and "advantage=" in x for x in lines)
    off = load_config(data={"trainer": {"output_dir": str(tmp_path / "off"), "log_samples": False},
                            "rewards": [{"name": "x"}]})
    log_samples(6, off, trajs, results, batch, group_ids)
    assert not (tmp_path / "off").exists()
