"""A run whose every episode fails stops with the episodes' error (real SmolLM2 on the CPU, the hf backend, the
real step driver in one process, `toolrl.trainer.local`).

On the GPU machine (2026-12-05) a learning run's python environment could not start (its sandbox package's
`docker` dependency was missing): every episode ended with that error, and the run trained 60 steps on nothing
with only "the reward is 0" warnings. Now each such step warns with the error and the third in a row raises it.
"""

from __future__ import annotations

import json

import pytest
import train_support as S  # tests/support, on the path through pytest's `pythonpath` (pyproject.toml)

from toolrl import hookimpl
from toolrl.errors import ToolrlError

pytestmark = pytest.mark.integration


class NoSandboxEnv:
    def __init__(self, ctx, **kwargs):
        pass

    async def reset(self, task):
        raise ToolrlError("a sandbox pool needs the toolrl-sandbox distribution", where="envs.python",
                          fix="pip install -e ./sandbox")

    async def step(self, call):  # never reached
        raise AssertionError("step after a failed reset")


class NoSandboxPlugin:
    @hookimpl
    def register_environments(self, register):
        register("no_sandbox", NoSandboxEnv)


def test_a_run_whose_every_episode_fails_stops_at_the_third_step_with_the_error(tmp_path, caplog):
    from toolrl.config import Config
    from toolrl.trainer.local import local_context
    from toolrl.trainer.step import FAILED_STEPS_LIMIT, train_step

    tasks = tmp_path / "tasks.jsonl"
    rows = [json.loads(x) for x in S.write_tasks(tmp_path / "plain.jsonl", 4).read_text().splitlines()]
    tasks.write_text("".join(json.dumps({**r, "env": "no_sandbox"}) + "\n" for r in rows))
    cfg = S.base_config(tmp_path, data={"train_file": str(tasks), "prompts_per_step": 2},
                        trainer={"total_steps": 5, "lr": 1e-5, "micro_batch_size": 2, "metric_sinks": [],
                                 "output_dir": str(tmp_path / "run"), "seed": 0, "log_samples": False})
    cfg["ray"] = {"torch_threads": 2}
    ctx = local_context(Config.model_validate(cfg), plugins=[NoSandboxPlugin(), S.AnswerTagPlugin()])
    done = []
    with pytest.raises(ToolrlError) as err:
        for step in range(1, 6):
            train_step(step, ctx)
            done.append(step)
    assert done == list(range(1, FAILED_STEPS_LIMIT))  # steps 1 and 2 ran (and warned), step 3 raised
    assert "step 1: all 4 episodes ended with an error" in caplog.text
    text = str(err.value)
    assert f"every episode of the last {FAILED_STEPS_LIMIT} steps ended with an error" in text
    assert "environment reset (no_sandbox) raised ToolrlError" in text and "pip install -e ./sandbox" in text
