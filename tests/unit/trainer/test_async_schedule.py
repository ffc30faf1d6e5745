"""Asynchronous rollouts: the staleness rule, the pipeline's scheduling (bounded lag, versions, order of
phases, pauses, errors, sampler state) and the importance-sampling correction on a hand-computed example.

The pipeline tests drive the real `AsyncRollouts` thread; its engines and its phase 1-3 function are
recording stand-ins, because what is checked is the order of calls the pipeline makes (the real run with
SmolLM2 is tests/integration/test_async_train.py).
"""

from __future__ import annotations

import math
import random
import threading
import time
from types import SimpleNamespace

import pytest
import torch

from toolrl.config import load_config
from toolrl.errors import ToolrlError
from toolrl.trainer.batch import build_batch
from toolrl.trainer.collect import Collected
from toolrl.trainer.optimize import loss_terms
from toolrl.trainer.pipeline import AsyncRollouts, make_pipeline
from toolrl.trainer.roles import WeightUpdate
from toolrl.trainer.sampler import TaskSampler
from toolrl.trainer.staleness import StalenessBound
from toolrl.types import Trajectory

# ------------------------------------------------------------------------------------------------
# The rule
# ------------------------------------------------------------------------------------------------


def test_staleness_bound_rule():
    sync, one = StalenessBound(0), StalenessBound(1)
    assert [sync.oldest_version(k) for k in (1, 2, 3)] == [0, 1, 2]
    assert [one.oldest_version(k) for k in (1, 2, 3, 4)] == [0, 0, 1, 2]
    assert sync.may_start(3, 2) and not sync.may_start(3, 1)
    assert one.may_start(3, 1) and not one.may_start(3, 0)
    assert one.furthest_step(0) == 2 and StalenessBound(2).furthest_step(4) == 7
    assert one.lag(5, 3) == 1
    assert one.check_batch(3, [1, 2, 1]) == 1 and one.check_batch(3, []) == 0
    with pytest.raises(ToolrlError, match="outside the allowed 1..2"):
        one.check_batch(3, [0, 2])  # two updates behind with max_staleness 1
    with pytest.raises(ToolrlError, match="outside"):
        one.check_batch(3, [3])  # newer than the trainer could have published
    with pytest.raises(ValueError):
        StalenessBound(-1)


# ------------------------------------------------------------------------------------------------
# The pipeline, over recording engines
# ------------------------------------------------------------------------------------------------


class RecordingEngines:
    """Records the calls the pipeline makes; `version` is what it was last synced to."""

    def __init__(self, log: list, sync_seconds: float = 0.0):
        self.log, self.version, self.sync_seconds = log, 0, sync_seconds
        self.thread_ids: set[int] = set()

    def sync_weights(self, update: WeightUpdate) -> dict[str, float]:
        self.thread_ids.add(threading.get_ident())
        time.sleep(self.sync_seconds)
        self.version = update.version
        self.log.append(("engine_sync", update.version))
        return {"sync/seconds": self.sync_seconds}


def _traj(task: int, sample: int, version: int) -> Trajectory:
    return Trajectory(task_id=f"t{task}", sample_index=sample, prompt_ids=(1, 2), response_ids=(3,), loss_mask=(1,),
                      logprobs=(-1.0,), messages=({"role": "user", "content": "q"},), num_prompt_messages=1,
                      weight_version=version)


def _ctx(staleness: int, steps: int, log: list, *, placement: str = "colocated", sync_seconds: float = 0.0):
    cfg = load_config(None, [f"trainer.async_rollouts.max_staleness={staleness}", f"trainer.total_steps={steps}",
                             "data.prompts_per_step=2", "rollout.n=2", f"rollout.placement={placement}",
                             "ray.engine.num_cpus=1"])
    engines = RecordingEngines(log, sync_seconds)
    return SimpleNamespace(cfg=cfg, version=0, engines=engines, sampler=TaskSampler(10, 2, shuffle=False))


def _producer(ctx, log: list, seconds=lambda step: 0.0, fail_at: int | None = None, started: dict | None = None):
    """Phases 1-3 stand-in: draws the step's prompts from the real sampler and stamps the engines' version."""

    def produce(step, timer):
        if started is not None and step in started:
            started[step].set()
        with timer("rollout"):
            if step == fail_at:
                raise RuntimeError("reward server down")
            indices = ctx.sampler.next_indices()
            time.sleep(seconds(step))
            trajs = [_traj(i, s, ctx.engines.version) for i in indices for s in range(2)]
        log.append(("rolled", step, ctx.engines.version))
        return Collected(prompts=[], trajectories=trajs, results=[], scores=[1.0] * len(trajs))

    return produce


def _train(pipe: AsyncRollouts, ctx, steps: int, log: list, seconds=lambda step: 0.0) -> list:
    got = []
    for k in range(1, steps + 1):
        ready = pipe.next_batch(k)
        log.append(("train", k, ready.version))
        got.append(ready)
        time.sleep(seconds(k))
        ctx.version += 1
        pipe.publish(WeightUpdate(ctx.version, None))
    return got


@pytest.mark.parametrize("staleness", [0, 1, 2])
def test_never_more_than_max_staleness_behind(staleness):
    """Random rollout and update durations: every trajectory is within the bound, every batch is stamped with
    the version that sampled it, queue depth <= S, and each rollout uses the newest weights published before it."""
    rng = random.Random(staleness)
    durations = {k: (rng.uniform(0, 0.03), rng.uniform(0, 0.03)) for k in range(1, 13)}
    log: list = []
    ctx = _ctx(staleness, 12, log)
    with AsyncRollouts(ctx, 1, 12, produce=_producer(ctx, log, lambda k: durations[k][0])) as pipe:
        batches = _train(pipe, ctx, 12, log, lambda k: durations[k][1])
    bound = StalenessBound(staleness)
    for k, ready in enumerate(batches, start=1):
        versions = {t.weight_version for t in ready.collected.trajectories}
        assert versions == {ready.version}
        assert bound.oldest_version(k) <= ready.version <= k - 1
        assert ready.metrics["async/batch_lag"] == (k - 1) - ready.version <= staleness
        assert ready.metrics["async/queue_depth"] <= staleness
    # the engines are only called from the pipeline's own thread
    assert ctx.engines.thread_ids and threading.get_ident() not in ctx.engines.thread_ids
    if staleness == 0:  # synchronous order: nothing overlaps
        rolled = [e for e in log if e[0] in ("rolled", "train")]
        assert rolled == [e for k in range(1, 13) for e in (("rolled", k, k - 1), ("train", k, k - 1))]


def test_one_step_off_policy_overlaps_and_zero_does_not():
    """max_staleness=1: batch 2 is sampled (with version 0) while step 1 trains; max_staleness=0: it is not."""
    for staleness, overlaps in ((1, True), (0, False)):
        log: list = []
        ctx = _ctx(staleness, 3, log)
        started = {2: threading.Event()}
        with AsyncRollouts(ctx, 1, 3, produce=_producer(ctx, log, started=started)) as pipe:
            first = pipe.next_batch(1)
            assert first.version == 0
            # step 1 "trains" until batch 2 is being sampled (or, synchronous, a while)
            assert started[2].wait(5 if overlaps else 0.3) is overlaps
            pipe.publish(WeightUpdate(1, None))
            second = pipe.next_batch(2)
            assert second.version == (0 if overlaps else 1)
            assert second.metrics["async/batch_lag"] == (1 if overlaps else 0)


def test_sync_happens_before_the_next_rollout_and_the_step_waits_for_it():
    """With a colocated engine the step starts only after a due weight load (it shares the model lock); the
    load precedes the rollout that uses it. Batch 2 is held until version 1 is published, so when the step
    takes it the load of version 1 is due."""
    log: list = []
    ctx = _ctx(1, 4, log, sync_seconds=0.2)
    release = threading.Event()
    inner = _producer(ctx, log)

    def produce(step, timer):
        if step == 2:
            assert release.wait(10)
        return inner(step, timer)

    with AsyncRollouts(ctx, 1, 4, produce=produce) as pipe:
        assert pipe.next_batch(1).version == 0
        pipe.publish(WeightUpdate(1, None))
        release.set()
        second = pipe.next_batch(2)
        log.append(("train", 2, second.version))
        assert second.version == 0 and ("engine_sync", 1) in log  # loaded before the step went on
        assert second.metrics["async/sync_wait_seconds"] >= 0.15
        pipe.publish(WeightUpdate(2, None))
        for k in (3, 4):
            pipe.next_batch(k)
            pipe.publish(WeightUpdate(k, None))
    order = [e for e in log if e[0] in ("engine_sync", "rolled", "train")]
    assert order.index(("engine_sync", 1)) < order.index(("train", 2, 0))
    for i, e in enumerate(order):
        if e[0] == "rolled" and e[2] > 0:  # a rollout with version v > 0 comes after the load of v
            assert ("engine_sync", e[2]) in order[:i]


def test_separate_engines_do_not_hold_the_step():
    log: list = []
    ctx = _ctx(1, 3, log, placement="separate")
    pipe = AsyncRollouts(ctx, 1, 3, produce=_producer(ctx, log))
    assert pipe.wait_for_sync is False
    pipe.close()


def test_error_in_rollout_thread_reaches_the_step():
    log: list = []
    ctx = _ctx(1, 4, log)
    with AsyncRollouts(ctx, 1, 4, produce=_producer(ctx, log, fail_at=2)) as pipe:
        assert pipe.next_batch(1).step == 1
        pipe.publish(WeightUpdate(1, None))
        with pytest.raises(ToolrlError, match="rollout thread failed: RuntimeError: reward server down"):
            pipe.next_batch(2)


def test_pause_holds_the_thread_and_loads_the_newest_weights():
    log: list = []
    ctx = _ctx(2, 6, log)
    with AsyncRollouts(ctx, 1, 6, produce=_producer(ctx, log, lambda k: 0.02)) as pipe:
        pipe.next_batch(1)
        pipe.publish(WeightUpdate(1, None))
        with pipe.paused():
            assert ctx.engines.version == 1  # evaluation sees the newest weights
            n = len(log)
            time.sleep(0.2)
            assert len(log) == n, "the rollout thread worked during a pause"
        for k in range(2, 7):
            pipe.next_batch(k)
            pipe.publish(WeightUpdate(k, None))


def test_checkpoint_sampler_state_is_the_trained_step_not_the_sampled_ahead():
    """Batches sampled ahead are not in a checkpoint: the sampler state saved at step k is the one after
    batch k, so a resumed run draws batches k+1.. again."""
    log: list = []
    ctx = _ctx(2, 6, log)
    with AsyncRollouts(ctx, 1, 6, produce=_producer(ctx, log)) as pipe:
        pipe.next_batch(1)
        time.sleep(0.2)  # batches 2 and 3 may be sampled meanwhile
        assert pipe.sampler_state(1) == {"epoch": 0, "position": 2, "num_tasks": 10}
        pipe.publish(WeightUpdate(1, None))
        pipe.next_batch(2)
        assert pipe.sampler_state(2)["position"] == 4
        with pytest.raises(ToolrlError, match="no sampler state for step 5"):
            pipe.sampler_state(5)


def test_make_pipeline_only_in_async_mode():
    log: list = []
    assert make_pipeline(_ctx(0, 3, log), 1, 3) is None
    ctx = _ctx(1, 3, log)
    ctx.engines = SimpleNamespace(version=0)
    pipe = AsyncRollouts(ctx, 1, 3, start=False)
    assert pipe.bound.max_staleness == 1 and pipe.last_step == 3


# ------------------------------------------------------------------------------------------------
# The importance-sampling correction, by hand
# ------------------------------------------------------------------------------------------------


def test_stale_batch_importance_weights_hand_computed():
    """One sample, 3 response tokens, advantage 1, ratio 1 (logprobs == proximal old):

        proximal (trainer, before the update)   log .5   log .3   log .2
        behaviour (engine, older weights)       log .25  log .6   log .2
        weight min(exp(prox - behav), cap=1.5)  1.5      0.5      1.0

    token-mean PPO loss = -(1.5 + 0.5 + 1.0) / 3 = -1.0; d loss / d logprob_t = -w_t / 3.
    """
    prox = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    behav = [math.log(0.25), math.log(0.6), math.log(0.2)]
    traj = Trajectory(task_id="t", sample_index=0, prompt_ids=(1, 2), response_ids=(3, 4, 5), loss_mask=(1, 1, 1),
                      logprobs=tuple(behav), messages=({"role": "user", "content": "q"},), num_prompt_messages=1,
                      weight_version=0)
    batch = build_batch([traj], ["t"], [True], pad_token_id=0)
    batch.extras["advantages"] = torch.ones(1, 3)
    batch.extras["old_logprobs"] = prox
    cfg = load_config(None, ["algorithm.loss_agg=token-mean"])
    logprobs = prox.clone().requires_grad_(True)
    loss, stats = loss_terms(logprobs, None, batch, cfg.algorithm, "loss", 0.0, 3.0, is_cap=1.5)
    assert float(loss.detach()) == pytest.approx(-1.0, abs=1e-6)
    assert stats["actor/tis_weight_mean"] == pytest.approx(1.0, abs=1e-6)  # (1.5 + 0.5 + 1) / 3
    loss.backward()
    assert logprobs.grad.tolist()[0] == pytest.approx([-0.5, -0.5 / 3, -1 / 3], abs=1e-6)
    # a fresh batch (no cap, no algorithm.tis_cap): plain PPO, loss -1 and gradient -1/3 everywhere
    plain, stats = loss_terms(prox.clone().requires_grad_(True), None, batch, cfg.algorithm, "loss", 0.0, 3.0)
    assert float(plain.detach()) == pytest.approx(-1.0, abs=1e-6) and "actor/tis_weight_mean" not in stats
    # algorithm.tis_cap wins over nothing; an explicit is_cap overrides it
    capped = load_config(None, ["algorithm.loss_agg=token-mean", "algorithm.tis_cap=1.2"]).algorithm
    lp = prox.clone().requires_grad_(True)
    loss_tis, _ = loss_terms(lp, None, batch, capped, "loss", 0.0, 3.0)
    assert float(loss_tis.detach()) == pytest.approx(-(1.2 + 0.5 + 1.0) / 3, abs=1e-6)


def test_stale_cap_resolution():
    from toolrl.trainer.step import stale_is_cap

    assert stale_is_cap(load_config(None, [])) == 2.0
    assert stale_is_cap(load_config(None, ["algorithm.tis_cap=3"])) == 3.0
    assert stale_is_cap(load_config(None, ["trainer.async_rollouts.is_cap=null"])) is None


# ------------------------------------------------------------------------------------------------
# Config: what async mode refuses, and when the engine sleeps
# ------------------------------------------------------------------------------------------------


def test_async_config_problems():
    from toolrl.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot release its memory"):
        load_config(None, ["trainer.async_rollouts.max_staleness=1", "rollout.sleep_during_update=true"])
    with pytest.raises(ConfigError, match="trainer.data_parallel"):
        load_config(None, ["trainer.async_rollouts.max_staleness=1", "trainer.data_parallel=2"])
    load_config(None, ["trainer.async_rollouts.max_staleness=1", "trainer.data_parallel=2",
                       "rollout.placement=separate", "ray.engine.num_cpus=1"])
    # a job of 3 batches with max_staleness 1 would wait for its own first batch to be trained
    with pytest.raises(ConfigError, match=r"steps_per_rollout.*at least 2 \(3 or more lets the job overlap"):
        load_config(None, ["trainer.async_rollouts.max_staleness=1", "trainer.async_rollouts.steps_per_rollout=3"])
    with pytest.raises(ConfigError, match="steps_per_rollout.*dynamic_sampling"):
        load_config(None, ["trainer.async_rollouts.max_staleness=2", "trainer.async_rollouts.steps_per_rollout=2",
                           "algorithm.dynamic_sampling=true"])
    with pytest.raises(ConfigError, match="steps_per_rollout"):  # synchronous: one batch per job
        load_config(None, ["trainer.async_rollouts.steps_per_rollout=2"])
    assert load_config(None, ["trainer.async_rollouts.max_staleness=1",
                              "trainer.async_rollouts.steps_per_rollout=2"]).trainer.async_rollouts.steps_per_rollout == 2


def _many_producer(ctx, log: list, seconds: float = 0.0):
    """Phases 1-3 of several steps at once: one job per call, each batch stamped with the engines' version."""

    def produce_many(steps, timers):
        log.append(("job", tuple(steps), ctx.engines.version))
        out = []
        for step, timer in zip(steps, timers):
            with timer("rollout"):
                indices = ctx.sampler.next_indices()
                time.sleep(seconds)
            trajs = [_traj(i, s, ctx.engines.version) for i in indices for s in range(2)]
            out.append((Collected(prompts=[], trajectories=trajs, results=[], scores=[1.0] * len(trajs)),
                        dict(ctx.sampler.state_dict())))
        return out

    return produce_many


@pytest.mark.parametrize("staleness, per_job", [(1, 2), (2, 2), (3, 2), (2, 3)])
def test_jobs_of_several_steps_stay_within_the_bound(staleness, per_job):
    """steps_per_rollout = m: batches j..j+m-1 come from one job, sampled with one weight version once batch
    j+m-1 may start; every batch within max_staleness; the sampler state is each step's own."""
    rng = random.Random(per_job * 10 + staleness)
    log: list = []
    ctx = _ctx(staleness, 11, log)
    with AsyncRollouts(ctx, 1, 11, steps_per_rollout=per_job, produce=_producer(ctx, log),
                       produce_many=_many_producer(ctx, log, 0.005)) as pipe:
        batches = _train(pipe, ctx, 11, log, lambda k: rng.uniform(0, 0.02))
    jobs = [e for e in log if e[0] == "job"]
    expected = [tuple(range(j, min(j + per_job, 12))) for j in range(1, 12, per_job)]
    # the last job may be a single step (produced alone); every other is one call of m steps
    assert [j[1] for j in jobs] == [s for s in expected if len(s) > 1]
    bound = StalenessBound(staleness)
    reference = TaskSampler(10, 2, shuffle=False)
    for k, ready in enumerate(batches, start=1):
        assert {t.weight_version for t in ready.collected.trajectories} == {ready.version}
        assert bound.oldest_version(k) <= ready.version <= k - 1
        assert ready.metrics["async/batch_lag"] <= staleness
        reference.next_indices()
        assert ready.sampler_state == reference.state_dict()  # after this step's own prompts
    for _, steps, version in jobs:  # a job starts only once its last batch is within the bound
        assert version >= bound.oldest_version(steps[-1])
        assert len({batches[s - 1].version for s in steps}) == 1
    assert batches[1].metrics["async/steps_per_rollout"] == float(min(per_job, 11))


def test_a_step_does_not_wait_for_a_load_behind_a_whole_job_in_flight():
    """steps_per_rollout=2, max_staleness 3: job (3, 4) starts right after job (1, 2). While it is in flight,
    step 2 takes its batch without waiting for the load of version 1 (the thread does it before job (5, 6))."""
    log: list = []
    ctx = _ctx(3, 6, log)
    release, started = threading.Event(), threading.Event()
    inner = _many_producer(ctx, log)

    def produce_many(steps, timers):
        if steps[0] == 3:
            started.set()
            assert release.wait(10)
        return inner(steps, timers)

    with AsyncRollouts(ctx, 1, 6, steps_per_rollout=2, produce=_producer(ctx, log),
                       produce_many=produce_many) as pipe:
        assert pipe.next_batch(1).version == 0
        assert started.wait(5)
        pipe.publish(WeightUpdate(1, None))
        t0 = time.perf_counter()
        second = pipe.next_batch(2)
        assert time.perf_counter() - t0 < 2 and second.metrics["async/sync_wait_seconds"] < 2
        assert ("engine_sync", 1) not in log  # the job in flight holds the load back; the step did not wait
        pipe.publish(WeightUpdate(2, None))
        release.set()
        third = pipe.next_batch(3)
        assert third.version == 0  # job (3, 4) was sampled with the weights it started with
        pipe.publish(WeightUpdate(3, None))
        pipe.next_batch(4)
        pipe.publish(WeightUpdate(4, None))
        assert pipe.next_batch(5).version >= 2  # the next job loaded the newest published weights first
    [job56] = [e for e in log if e[:2] == ("job", (5, 6))]
    assert ("engine_sync", 1) not in log and job56[2] >= 2


def test_a_job_longer_than_the_bound_allows_is_refused():
    ctx = _ctx(1, 4, [])
    with pytest.raises(ToolrlError, match="steps_per_rollout=3 with max_staleness=1"):
        AsyncRollouts(ctx, 1, 4, steps_per_rollout=3, start=False)


def test_a_job_larger_than_the_engine_batch_is_warned_about(caplog):
    ctx = _ctx(2, 4, [])  # 2 prompts x 2 samples per step; rollout.max_batch_size 32 by default
    ctx.cfg.rollout.max_batch_size = 6
    with caplog.at_level("WARNING", logger="toolrl.trainer.pipeline"):
        AsyncRollouts(ctx, 1, 4, steps_per_rollout=2, start=False)
    assert "holds 8 episodes" in caplog.text and "set rollout.max_batch_size=8" in caplog.text
    caplog.clear()
    ctx.cfg.rollout.max_batch_size = 8
    with caplog.at_level("WARNING", logger="toolrl.trainer.pipeline"):
        AsyncRollouts(ctx, 1, 4, steps_per_rollout=2, start=False)
    assert "waves" not in caplog.text


@pytest.mark.parametrize("overrides, device, expected", [
    (["rollout.backend=vllm"], "cuda:0", True),
    (["rollout.backend=sglang"], "cuda:0", True),
    (["rollout.backend=vllm"], "cpu", False),
    (["rollout.backend=hf"], "cuda:0", False),
    (["rollout.backend=vllm", "rollout.placement=separate", "ray.engine.num_cpus=1"], "cuda:0", False),
    (["rollout.backend=vllm", "trainer.async_rollouts.max_staleness=1"], "cuda:0", False),
    (["rollout.backend=vllm", "rollout.sleep_during_update=false"], "cuda:0", False),
    (["rollout.backend=hf", "rollout.sleep_during_update=true"], "cpu", True),
])
def test_sleep_during_update_resolution(overrides, device, expected):
    from toolrl.trainer.step import sleep_backend_args, sleeps_during_update

    assert sleeps_during_update(load_config(None, overrides), device) is expected
    assert sleep_backend_args("vllm") == {"enable_sleep_mode": True}
    assert sleep_backend_args("hf") == {}
