"""`make demo`'s script end to end, shortened: every stage really runs (doctor, task files, base eval, GRPO
training with sandbox rewards through Ray, trained eval, the before/after table, plots, `toolrl serve` and a
chat request with tools through the openai client), on SmolLM2-135M with one tiny step instead of Qwen's four.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shortened_demo_runs_every_stage(tmp_path, docker_ready, smollm2_path):
    run = tmp_path / "demo"
    env = {
        **os.environ,
        "DEMO_MODEL": "smollm2-135m-instruct",
        "DEMO_STEPS": "1",
        "DEMO_TRAIN_N": "4",
        "DEMO_EVAL_N": "2",
        "DEMO_RUN_DIR": str(run),
        "DEMO_PORT": str(_free_port()),
        "DEMO_OVERRIDES": "rollout.n=2 data.prompts_per_step=2 trainer.micro_batch_size=2 rollout.max_new_tokens=24",
        "TOOLRL_NO_ENTRYPOINTS": "0",  # the demo finds the installed env and reward plugins like a user's run
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for stage in range(1, 9):
        assert f"== {stage}/8 " in out, f"stage {stage} did not run:\n{out[-3000:]}"

    # base and trained evaluations of the same held-out file, and the table comparing them
    base, trained = (json.loads((run / f"eval_{k}.json").read_text()) for k in ("base", "trained"))
    assert base["tasks_file"] == trained["tasks_file"] == str(run / "data" / "eval.jsonl")
    assert base["label"] == "base" and trained["label"] == "trained"
    assert base["metrics"]["eval/num_tasks"] == trained["metrics"]["eval/num_tasks"] == 2
    table = (run / "before_after.txt").read_text()
    assert "accuracy" in table and "base" in table and "trained" in table

    # a checkpoint that loads as a normal HF folder, metrics, plots, logs
    ckpt = (run / "train" / "checkpoints" / "latest").resolve()
    assert ckpt.name == "step_000001"
    rows = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 1 and "reward/math_equiv" in rows[-1] and "rollout/tool_calls" in rows[-1]
    assert {p.name for p in (run / "train" / "plots").glob("*.png")} >= {"reward.png", "accuracy.png",
                                                                          "length.png"}
    log = (run / "train" / "train.log").read_text()
    assert "toolrl train: smollm2-135m-instruct" in log and "step 1/1  reward" in log, log  # header, step line

    # the served model answered the chat request (its content or a tool call the sandbox ran)
    served = (run / "served_answer.txt").read_text()
    assert served.startswith("user: Solve the following multiplication")
    assert "assistant" in served, served
    assert "served answer" in out and str(ckpt.parent / "latest") in out  # the final screen says where things are
