"""Data order, LR schedule, checkpoint directories, OOM advice, config checks, the no-signal warning."""

import json
import logging

import pytest
import torch

from toolrl.errors import ConfigError, ToolrlError
from toolrl.trainer.checkpoint import (
    atomic_checkpoint,
    checkpoints_dir,
    clean_partial,
    latest_checkpoint,
    list_checkpoints,
    resolve_resume,
)
from toolrl.trainer.oom import OutOfMemoryError, oom_hint
from toolrl.trainer.optim import lr_factor
from toolrl.trainer.sampler import TaskSampler
from toolrl.trainer.step import (FAILED_STEPS_LIMIT, failed_episodes_check, needs_old_logprobs, no_signal_check,
                                 step_seed)


def test_sampler_epochs_are_permutations_and_resume_exactly():
    s = TaskSampler(num_tasks=5, per_step=2, shuffle=True, seed=3)
    seen = [s.next_indices() for _ in range(5)]  # 10 draws = 2 epochs
    flat = [i for step in seen for i in step]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:]) == list(range(5))
    assert flat[:5] != flat[5:]  # each epoch has its own order
    # resume after 2 steps gives the same continuation
    a = TaskSampler(5, 2, True, 3)
    a.next_indices(), a.next_indices()
    state = a.state_dict()
    b = TaskSampler(5, 2, True, 3)
    b.load_state_dict(json.loads(json.dumps(state)))
    assert [b.next_indices() for _ in range(3)] == seen[2:]
    assert TaskSampler(4, 2, shuffle=False).next_indices() == [0, 1]


def test_sampler_rejects_a_different_task_file():
    s = TaskSampler(5, 2)
    with pytest.raises(ToolrlError, match="data.train_file"):
        s.load_state_dict({"epoch": 0, "position": 2, "num_tasks": 7})


def test_lr_schedule():
    # transformers' warm-up: from 0 at step 0 to the peak at step `warmup`
    assert [lr_factor(s, warmup=4, total=10, schedule="constant") for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_factor(4, warmup=4, total=10, schedule="linear") == 1.0
    assert lr_factor(7, warmup=4, total=10, schedule="linear") == pytest.approx(0.5)
    assert lr_factor(7, warmup=4, total=10, schedule="cosine") == pytest.approx(0.5)
    assert lr_factor(9, warmup=0, total=10, schedule="cosine") > 0  # the last step still learns
    assert lr_factor(0, warmup=0, total=10, schedule="linear") == 1.0  # no warm-up: the first step learns
    # the schedule is transformers' own, step for step
    from transformers import get_scheduler

    for ours, theirs in (("constant", "constant_with_warmup"), ("linear", "linear"), ("cosine", "cosine")):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-5)
        ref = get_scheduler(theirs, opt, num_warmup_steps=3, num_training_steps=12)
        expected = []
        for _ in range(12):
            expected.append(opt.param_groups[0]["lr"] / 2e-5)
            opt.step()
            ref.step()
        assert [lr_factor(s, warmup=3, total=12, schedule=ours) for s in range(12)] == pytest.approx(expected)
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        lr_factor(0, warmup=0, total=2, schedule="step")


def _fake_ckpt(tmp_path, step, keep=0):
    with atomic_checkpoint(tmp_path, step, keep=keep) as d:
        (d / "trainer_state.json").write_text(json.dumps({"step": step}))


def test_atomic_checkpoint_and_latest(tmp_path):
    _fake_ckpt(tmp_path, 1)
    _fake_ckpt(tmp_path, 2)
    assert latest_checkpoint(tmp_path).name == "step_000002"
    link = checkpoints_dir(tmp_path) / "latest"
    assert link.is_symlink() and link.resolve().name == "step_000002"
    # a save that dies half-way leaves the previous checkpoint as the latest, and no half folder
    with pytest.raises(RuntimeError), atomic_checkpoint(tmp_path, 3) as d:
        (d / "trainer_state.json").write_text("{}")
        raise RuntimeError("killed while saving")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1, 2]
    assert link.resolve().name == "step_000002"
    assert not [p for p in checkpoints_dir(tmp_path).iterdir() if p.name.startswith(".tmp-")]


def test_leftovers_of_a_killed_save_are_ignored_and_cleaned(tmp_path):
    _fake_ckpt(tmp_path, 1)
    stale = checkpoints_dir(tmp_path) / ".tmp-step_000002-abc"
    stale.mkdir()
    (stale / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(tmp_path).name == "step_000001"
    clean_partial(tmp_path)
    assert not stale.exists()


def test_prune_keeps_newest(tmp_path):
    for s in range(1, 5):
        _fake_ckpt(tmp_path, s, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]


def test_resolve_resume(tmp_path):
    assert resolve_resume("none", tmp_path) is None
    assert resolve_resume("auto", tmp_path) is None
    _fake_ckpt(tmp_path, 5)
    assert resolve_resume("auto", tmp_path).name == "step_000005"
    assert resolve_resume(str(tmp_path), tmp_path).name == "step_000005"  # a run directory
    with pytest.raises(ToolrlError, match="not a complete toolrl checkpoint") as exc:
        resolve_resume(str(tmp_path / "nope"), tmp_path)
    assert "trainer.resume" in str(exc.value)


def test_oom_is_turned_into_advice():
    with pytest.raises(OutOfMemoryError) as exc, oom_hint("update"):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "trainer.micro_batch_size" in str(exc.value)
    with pytest.raises(OutOfMemoryError, match="rollout.max_batch_size"), oom_hint("rollout"):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory")
    with pytest.raises(ValueError), oom_hint("update"):  # anything else passes through untouched
        raise ValueError("not memory")


def test_config_rejects_batch_that_splits_groups(make_config):
    with pytest.raises(ConfigError) as exc:
        make_config(**{"rollout.n": 4, "data.prompts_per_step": 2, "trainer.mini_batch_size": 6,
                       "trainer.micro_batch_size": 2})
    text = str(exc.value)
    assert "trainer.mini_batch_size" in text and "group size rollout.n=4" in text


def test_config_rejects_unknown_accuracy_reward(make_config):
    with pytest.raises(ConfigError, match="trainer.accuracy_reward"):
        make_config(**{"rewards": "[{name: format}]", "trainer.accuracy_reward": "correct"})


def test_old_logprobs_pass_only_when_the_policy_moves_first(make_config):
    one_step = make_config(**{"rollout.n": 4, "data.prompts_per_step": 2})
    assert not needs_old_logprobs(one_step, 8, has_reference=True)
    assert needs_old_logprobs(make_config(**{"trainer.ppo_epochs": 2}), 16, has_reference=False)
    assert needs_old_logprobs(make_config(**{"trainer.mini_batch_size": 8}), 16, has_reference=False)
    ppo = make_config(**{"algorithm.advantage": "ppo", "algorithm.kl_coef": 0.1})
    assert needs_old_logprobs(ppo, 16, has_reference=True)  # KL in the reward needs them before the update


def test_all_zero_reward_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="toolrl.trainer.step"):
        m = no_signal_check(7, torch.zeros(4), [True] * 4, ["0", "0", "1", "1"], group_based=True)
    assert "step 7: the reward is 0 for all 4 samples" in caplog.text and "rollout.debug=true" in caplog.text
    assert m["reward/zero_std_groups"] == 1.0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="toolrl.trainer.step"):
        m = no_signal_check(1, torch.tensor([1.0, 0.0, 1.0, 1.0]), [True] * 4, ["0", "0", "1", "1"], True)
    assert caplog.text == "" and m["reward/zero_std_groups"] == 0.5


def _episode(i: int, error: str | None):
    from toolrl.types import Trajectory

    return Trajectory(task_id=f"t{i}", sample_index=0, prompt_ids=(1, 2), response_ids=(), loss_mask=(), logprobs=(),
                      messages=(), finish_reason="error" if error else "stop", num_turns=0, error=error)


def test_steps_whose_every_episode_failed_warn_then_stop_the_run(caplog):
    """The 2026-12-05 GPU learning run trained 60 steps on episodes whose environment could not start; now the
    run warns with the error at once and stops after FAILED_STEPS_LIMIT such steps in a row."""
    broken = "environment reset (python) raised ToolrlError: envs.python: no sandbox"
    streak = 0
    for step in range(1, FAILED_STEPS_LIMIT):
        with caplog.at_level(logging.WARNING, logger="toolrl.trainer.step"):
            streak = failed_episodes_check(step, [_episode(0, broken), _episode(1, broken), _episode(2, "other")],
                                           streak)
        assert streak == step
        assert f"step {step}: all 3 episodes ended with an error (2 of them: {broken})" in caplog.text
        caplog.clear()
    with pytest.raises(ToolrlError) as err:
        failed_episodes_check(FAILED_STEPS_LIMIT, [_episode(0, broken), _episode(1, broken)], streak)
    text = str(err.value)
    assert f"the last {FAILED_STEPS_LIMIT} steps" in text
    assert f"(2 of 2 episodes at step {FAILED_STEPS_LIMIT}): " in text
    assert broken in text and "toolrl inspect" in text and text.startswith("rollout: ")


def test_one_completed_episode_resets_the_failed_step_count(caplog):
    with caplog.at_level(logging.WARNING, logger="toolrl.trainer.step"):
        assert failed_episodes_check(5, [_episode(0, "boom"), _episode(1, None)], FAILED_STEPS_LIMIT - 1) == 0
        assert failed_episodes_check(6, [], 1) == 0
    assert caplog.text == ""


def test_step_seeds_differ_and_repeat():
    assert step_seed(0, 1) != step_seed(0, 2) != step_seed(1, 1)
    assert step_seed(3, 9) == step_seed(3, 9)
