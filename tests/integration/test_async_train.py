"""Asynchronous rollouts and sleep/wake with real components: SmolLM2-135M on the CPU, the hf backend, the
real step driver, in one process (`toolrl.trainer.local`, the path the GPU benchmarks use without Ray).

- async (max_staleness 1), 3 steps: batch 1 is sampled with version 0 (lag 0), batches 2 and 3 one update
  behind (lag 1) while the previous step trains; stale steps carry the importance weights; the policy moves.
- two steps per rollout job (steps_per_rollout 2, max_staleness 2): one engine job per two steps, each step's
  prompts with its own seed, every batch within the bound.
- sync with rollout.sleep_during_update=true: the step calls sleep after the rollout and rewards, the update,
  then wake, then the weight sync (a recording wrapper around the real engines and trainer).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import train_support as S  # tests/support, on the path through pytest's `pythonpath` (pyproject.toml)
import torch

pytestmark = pytest.mark.integration

SUPPORT = Path(S.__file__)


def length_reward(trajectories, *, completions, **kwargs):
    """Characters of the completion / 100: varies between samples, so every group has a learning signal."""
    return [len(c or "") / 100.0 for c in completions]


class LengthRewardPlugin:
    from toolrl import hookimpl

    @hookimpl
    def register_rewards(self, register):
        register("async_test_length", length_reward)


def _config(tmp: Path, **trainer):
    from toolrl.config import Config

    cfg = S.base_config(
        tmp, rewards=[{"name": "async_test_length", "weight": 1.0}],
        trainer={"total_steps": 3, "lr": 1e-4, "micro_batch_size": 2, "output_dir": str(tmp / "run"),
                 "metric_sinks": [], "seed": 0, "log_samples": False, **trainer})
    cfg["ray"] = {"torch_threads": 2}
    return Config.model_validate(cfg)


def _params(ctx) -> torch.Tensor:
    return torch.cat([p.detach().float().reshape(-1)[:2000] for p in ctx.trainer.rank.model.parameters()])


def test_async_one_step_off_policy_trains(tmp_path, plugin_manager):
    from toolrl.trainer.local import local_context
    from toolrl.trainer.pipeline import AsyncRollouts
    from toolrl.trainer.step import train_step

    cfg = _config(tmp_path, async_rollouts={"max_staleness": 1})
    ctx = local_context(cfg, plugins=[LengthRewardPlugin()])
    before = _params(ctx)
    rows = []
    pipe = AsyncRollouts(ctx, 1, 3)
    try:
        for step in (1, 2, 3):
            rows.append(train_step(step, ctx, pipe))
    finally:
        pipe.close()
        ctx.engines.close()
    assert [r["rollout/weight_lag"] for r in rows] == [0.0, 1.0, 1.0]
    assert [r["rollout/weight_version"] for r in rows] == [0.0, 0.0, 1.0]
    assert ctx.version == 3
    # batch 2 was sampled while step 1 trained: the rollout thread began it before step 1's weights existed
    events = pipe.events
    assert events.index(("rollout", 2, 0)) < events.index(("publish", 1, 1))
    assert ("sync", 3, 1) in events and events.index(("sync", 3, 1)) < events.index(("rollout", 3, 1))
    for what, step, version in events:
        if what == "rollout":
            assert version >= step - 2  # never more than max_staleness behind
    # stale steps are corrected (decoupled PPO weights); the fresh first step is not
    assert "actor/tis_weight_mean" not in rows[0]
    for r in rows[1:]:
        assert 0.0 < r["actor/tis_weight_mean"] <= 2.0
    for r in rows:
        assert r["async/max_staleness"] == 1.0 and r["async/queue_depth"] <= 1
        assert 0.0 <= r["async/rollout_overlap"] <= 1.0 and r["timing/rollout"] > 0
        assert math.isfinite(r["loss/policy"]) and math.isfinite(r["actor/grad_norm"])
    assert any(r["actor/grad_norm"] > 0 for r in rows)
    assert not torch.equal(before, _params(ctx)), "the policy did not change"
    assert pipe.sampler_state(3)["position"] == 6  # 3 batches of 2 prompts


def test_one_job_samples_two_steps_batches(tmp_path, plugin_manager):
    """trainer.async_rollouts.steps_per_rollout=2 (max_staleness 2): the engines get one job per two steps,
    each step's prompts with its own seeds; every batch stays within the bound; the prompts are those the
    sampler gives one step at a time."""
    from toolrl.trainer.context import step_seed
    from toolrl.trainer.local import local_context
    from toolrl.trainer.pipeline import AsyncRollouts
    from toolrl.trainer.sampler import TaskSampler
    from toolrl.trainer.step import train_step

    cfg = _config(tmp_path, total_steps=4, async_rollouts={"max_staleness": 2, "steps_per_rollout": 2})
    ctx = local_context(cfg, plugins=[LengthRewardPlugin()])
    jobs = []
    rollout = ctx.engines.rollout
    ctx.engines.rollout = lambda job: (jobs.append(job), rollout(job))[1]
    before = _params(ctx)
    pipe = AsyncRollouts(ctx, 1, 4)
    try:
        seen = [train_step(step, ctx, pipe) for step in (1, 2, 3, 4)]
    finally:
        pipe.close()
        ctx.engines.close()
    assert len(jobs) == 2 and [len(j.tasks) for j in jobs] == [4, 4]  # 2 steps x 2 prompts per job
    assert [j.task_seeds for j in jobs] == [
        (step_seed(0, a),) * 2 + (step_seed(0, a + 1),) * 2 for a in (1, 3)]
    reference = TaskSampler(len(ctx.tasks), 2, cfg.data.shuffle, cfg.trainer.seed)
    drawn = [ctx.tasks[i].id for _ in range(4) for i in reference.next_indices()]
    assert [t.id for j in jobs for t in j.tasks] == drawn
    lags = [r["rollout/weight_lag"] for r in seen]
    assert lags[:2] == [0.0, 1.0] and all(0.0 <= x <= 2.0 for x in lags)  # batches 1, 2 from version 0
    assert all(r["async/steps_per_rollout"] == 2.0 for r in seen)
    assert all(math.isfinite(r["loss/policy"]) for r in seen)
    assert not torch.equal(before, _params(ctx)), "the policy did not change"


class Recording:
    """Delegates to a real role and records the calls (the call order is what the test checks)."""

    def __init__(self, inner, name: str, log: list):
        self._inner, self._name, self._log = inner, name, log

    def __getattr__(self, attr):
        value = getattr(self._inner, attr)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            self._log.append(f"{self._name}.{attr}")
            return value(*args, **kwargs)

        return call


def test_sync_step_sleeps_during_the_update(tmp_path, plugin_manager):
    from toolrl.trainer.local import local_context
    from toolrl.trainer.step import train_step

    cfg = _config(tmp_path, total_steps=2, ppo_epochs=2)
    cfg = cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={"sleep_during_update": True})})
    ctx = local_context(cfg, plugins=[LengthRewardPlugin()])
    assert ctx.trainer.rank.sleeps  # the rank will also empty the CUDA cache after its update (on CUDA)
    log: list[str] = []
    ctx.engines = Recording(ctx.engines, "engines", log)
    ctx.trainer = Recording(ctx.trainer, "trainer", log)
    try:
        metrics = [train_step(step, ctx) for step in (1, 2)]
    finally:
        ctx.engines.close()
    calls = [c for c in log if c.split(".")[1] in ("rollout", "sleep", "logprobs", "update", "wake", "sync_weights")]
    one_step = ["engines.rollout", "engines.sleep", "trainer.logprobs", "trainer.update", "engines.wake",
                "engines.sync_weights"]
    assert calls == one_step * 2
    assert all(m["timing/sleep"] >= 0 and m["timing/wake"] >= 0 for m in metrics)
    assert [m["rollout/weight_lag"] for m in metrics] == [0.0, 0.0]
