"""What `toolrl.train` rejects before Ray or any model starts."""

import time

import pytest

import toolrl
from toolrl.errors import ConfigError, ToolrlError, UnknownNameError


def _reward(trajectories, **kwargs):
    return [0.0] * len(trajectories)


class _Plugin:
    @toolrl.hookimpl
    def register_rewards(self, register):
        register("zero", _reward)


@pytest.fixture
def tasks(tmp_path):
    p = tmp_path / "tasks.jsonl"
    p.write_text('{"id": "t1", "messages": [{"role": "user", "content": "hi"}]}\n')
    return p


def _cfg(tmp_path, tasks, **trainer):
    return {"rewards": [{"name": "zero"}], "data": {"train_file": str(tasks)},
            "trainer": {"output_dir": str(tmp_path / "run"), **trainer}}


def test_rejects_a_new_run_on_top_of_old_checkpoints(tmp_path, tasks, plugin_manager):
    import ray

    plugin_manager.register(_Plugin(), name="zero-reward")
    ckpt = tmp_path / "run" / "checkpoints" / "step_000003"
    ckpt.mkdir(parents=True)
    (ckpt / "COMPLETE").write_text("3\n")
    t0 = time.monotonic()
    with pytest.raises(ToolrlError, match="already holds checkpoints") as exc:
        toolrl.train(_cfg(tmp_path, tasks))
    assert "trainer.resume=auto" in str(exc.value)
    assert not ray.is_initialized() and time.monotonic() - t0 < 30


def test_unknown_reward_or_sink_fails_before_ray(tmp_path, tasks, plugin_manager):
    import ray

    with pytest.raises(UnknownNameError, match="zero"):
        toolrl.train(_cfg(tmp_path, tasks))
    plugin_manager.register(_Plugin(), name="zero-reward")
    with pytest.raises(UnknownNameError, match="metric sink named 'neptune'"):
        toolrl.train(_cfg(tmp_path, tasks, metric_sinks=["jsonl", "neptune"]))
    assert not ray.is_initialized()


def test_missing_train_file_and_bad_batch(tmp_path, tasks, plugin_manager):
    plugin_manager.register(_Plugin(), name="zero-reward")
    with pytest.raises(ToolrlError, match="data.train_file is not set"):
        toolrl.train({"rewards": [{"name": "zero"}], "trainer": {"output_dir": str(tmp_path / "r")}})
    with pytest.raises(ConfigError, match="rollout.n=4"):
        toolrl.train(_cfg(tmp_path, tasks), ["trainer.mini_batch_size=6", "trainer.micro_batch_size=2",
                                             "data.prompts_per_step=3"])
