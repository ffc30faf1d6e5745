"""Asynchronous rollouts through `toolrl.train` on a local Ray instance with real SmolLM2 actors: a colocated
engine (trainer rank 0 answers the rollout thread while it trains) and a separate engine actor; evaluation
and checkpoints pause the rollout thread; a checkpoint keeps the sampler at its step, so a resumed run samples
the dropped batches again, with the resumed weights."""

import json
from pathlib import Path

import pytest
import train_support as S  # tests/support, on the path through pytest's `pythonpath` (pyproject.toml)

pytestmark = pytest.mark.integration


@pytest.fixture
def answer_tag(plugin_manager):
    plugin_manager.register(S.AnswerTagPlugin(), name="answer-tag-test")
    return plugin_manager


def _config(tmp_path: Path, placement: str, total_steps: int, **async_rollouts) -> dict:
    ray = {"num_cpus": 2, "torch_threads": 1, "policy": {"num_cpus": 1}}
    if placement == "separate":
        ray["engine"] = {"num_cpus": 1}
    return S.base_config(
        tmp_path,
        rollout={"placement": placement},
        data={"eval_file": str(S.write_tasks(tmp_path / "eval.jsonl", 2, seed=9))},
        trainer={"total_steps": total_steps, "save_freq": 1, "eval_freq": 2, "lr": 1e-4, "keep_checkpoints": 0,
                 "metric_sinks": ["jsonl"], "async_rollouts": {"max_staleness": 1, **async_rollouts}},
        ray=ray,
    )


@pytest.mark.parametrize("placement", ["colocated", "separate"])
def test_async_train_through_ray(tmp_path, answer_tag, shared_ray, placement):
    import toolrl

    result = toolrl.train(_config(tmp_path, placement, 2))
    rows = S.read_metrics(result.run_dir)
    steps = [r for r in rows if r["step"] > 0]
    assert [r["step"] for r in steps] == [1, 2]
    assert [r["rollout/weight_lag"] for r in steps] == [0.0, 1.0]  # batch 2 sampled while step 1 trained
    assert [r["rollout/weight_version"] for r in steps] == [0.0, 0.0]
    assert "actor/tis_weight_mean" in steps[1] and "actor/tis_weight_mean" not in steps[0]
    assert all(r["async/max_staleness"] == 1.0 and r["async/queue_depth"] <= 1 for r in steps)
    assert "eval/accuracy" in steps[1]  # evaluation ran with the rollout thread paused
    # the checkpoint at step 1 holds the sampler after batch 1 (2 prompts), not after batch 2 sampled ahead
    state = json.loads((result.run_dir / "checkpoints" / "step_000001" / "trainer_state.json").read_text())
    assert state["sampler"]["position"] == 2 and state["weight_version"] == 1
    if placement == "separate":
        return
    # resume from step 2: batch 3 is sampled again, with the resumed weights (version 2)
    # (its step-3 checkpoint would be read by nothing: the resumed run saves none)
    resumed = toolrl.train(_config(tmp_path, placement, 3),
                           ["trainer.resume=auto", "trainer.save_freq=0", "trainer.save_last=false"])
    assert resumed.first_step == 3
    row = [r for r in S.read_metrics(resumed.run_dir) if r["step"] == 3][-1]
    assert row["rollout/weight_version"] == 2.0 and row["rollout/weight_lag"] == 0.0


def test_one_job_for_two_steps_through_a_separate_engine_actor(tmp_path, answer_tag, shared_ray):
    """trainer.async_rollouts.steps_per_rollout=2: the engine actor gets one job of both steps' prompts, each
    with its own step seed; batch 1 is fresh, batch 2 one update behind, both from version 0."""
    import toolrl

    result = toolrl.train(_config(tmp_path, "separate", 2, max_staleness=2, steps_per_rollout=2),
                          ["trainer.eval_freq=0", "trainer.save_freq=0"])
    steps = [r for r in S.read_metrics(result.run_dir) if r["step"] > 0]
    assert [r["rollout/weight_lag"] for r in steps] == [0.0, 1.0]
    assert [r["rollout/weight_version"] for r in steps] == [0.0, 0.0]
    assert all(r["async/steps_per_rollout"] == 2.0 and r["async/max_staleness"] == 2.0 for r in steps)
