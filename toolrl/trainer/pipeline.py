"""Asynchronous rollouts: the next batches are sampled in a background thread while a step trains.

    pipeline = AsyncRollouts(ctx, first_step=1, last_step=N)      # trainer.async_rollouts.max_staleness = S > 0
    for step in range(1, N + 1):
        metrics = train_step(step, ctx, pipeline)                  # takes batch `step`, publishes version `step`
    pipeline.close()

    rollout thread (this module)                       trainer thread (step.train_step)
    ----------------------------                       --------------------------------
    for batch j = first..last:                         step k:
      wait until published version >= j-1-S             batch k <- next_batch(k)   (waits for it)
      engines.sync_weights(newest published)            ref / old logprobs, advantages, update
      prompts, rollouts, rewards of batch j             publish(trainer.weights(k)) (version k)
      -> ready[j]

The rule of `toolrl.trainer.staleness.StalenessBound` keeps every batch within
S updates of the weights it is trained into, so at most S finished batches wait
(queue depth <= S). Every trajectory carries the version its engine held; the
step applies the decoupled-PPO correction to stale batches (see step.py).

The rollout thread alone talks to the engines (rollouts, weight loads), the
trainer thread alone to the trainer group: no engine call interleaves with
another. A colocated engine shares the trainer's process and weights, so its
weight copy waits for the model lock while an update runs; `next_batch` lets
a due weight load finish before the step starts its forward passes
(`wait_for_sync`, on for colocated engines), so the next rollout does not wait
for a whole update and the copy holds exactly the version it is labelled with
(with `steps_per_rollout` > 1 the step waits only for a load about to start, so
the label may be older than the copy: a lower bound, see `_sync_due`). The lock orders the two
threads' Python; `toolrl.trainer.weight_fence` orders their GPU work (the copy waits on the GPU for the
update's last kernels, which may still run when `update()` returns).
Separate engines load published weights (an object ref) in their own processes.

`paused()` stops the thread between batches (evaluation and checkpoints use the
engines from the trainer thread), optionally after loading the newest weights.
A checkpoint at step k saves the sampler as it was after batch k
(`sampler_state(k)`): batches sampled ahead are dropped and, after a resume,
sampled again (with newer weights).

Memory: a colocated engine keeps its KV cache while the update runs (no
sleep/wake in asynchronous mode); give both room (vllm gpu_memory_utilization).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolrl.errors import ToolrlError
from toolrl.metrics.timing import PhaseTimer
from toolrl.trainer.collect import Collected
from toolrl.trainer.context import StepContext, gather, gather_many
from toolrl.trainer.roles import WeightUpdate
from toolrl.trainer.staleness import StalenessBound

logger = logging.getLogger(__name__)

Produce = Callable[[int, PhaseTimer], Collected]  # (step, timer) -> that step's prompts, rollouts, rewards
# (steps, a timer each) -> each step's Collected and the sampler's state after its prompts (steps_per_rollout > 1)
ProduceMany = Callable[[Sequence[int], Sequence[PhaseTimer]], list[tuple[Collected, dict[str, int]]]]

_IDLE_STATES = ("gated", "done")


@dataclass
class ReadyBatch:
    """A batch sampled ahead: what `train_step` needs, and where it came from."""

    step: int
    collected: Collected
    version: int  # the engines' weight version when the batch was sampled
    sampler_state: dict[str, int]  # the sampler after this batch's prompts (a checkpoint at `step` saves it)
    busy_seconds: float  # rollout + rewards (+ the weight load before them)
    metrics: dict[str, float] = field(default_factory=dict)  # timing/rollout, timing/reward, sync/*, ...


class AsyncRollouts:
    """The rollout thread and its hand-over to the trainer (see the module docstring).

    Args:
        ctx: the run's StepContext (its engines, sampler, tasks and rewards are used from the thread).
        first_step, last_step: the batches to sample (a resumed run starts after its checkpoint); last_step
            None = cfg.trainer.total_steps (batches sampled beyond the last step trained are dropped at close).
        max_staleness: S; None = ctx.cfg.trainer.async_rollouts.max_staleness.
        produce: phases 1-3 of a step (default `context.gather`); tests pass their own.
        steps_per_rollout: m; None = ctx.cfg.trainer.async_rollouts.steps_per_rollout. With m > 1 the thread
            samples batches j..j+m-1 in one job (`produce_many`, default `context.gather_many`), once batch j+m-1
            may start (so every batch of the job stays within the bound; m <= max_staleness + 1).
        wait_for_sync: see the module docstring; None = on for rollout.placement=colocated.
    """

    def __init__(self, ctx: StepContext, first_step: int = 1, last_step: int | None = None, *,
                 max_staleness: int | None = None, produce: Produce | None = None, wait_for_sync: bool | None = None,
                 start: bool = True, steps_per_rollout: int | None = None, produce_many: ProduceMany | None = None):
        cfg = ctx.cfg
        last_step = cfg.trainer.total_steps if last_step is None else last_step
        staleness = cfg.trainer.async_rollouts.max_staleness if max_staleness is None else max_staleness
        per_job = cfg.trainer.async_rollouts.steps_per_rollout if steps_per_rollout is None else steps_per_rollout
        if not 1 <= per_job <= staleness + 1:
            raise ToolrlError(f"steps_per_rollout={per_job} with max_staleness={staleness}: a job's last batch "
                              "would wait for its first to be trained", where="trainer.async_rollouts",
                              fix="use 1 <= steps_per_rollout <= max_staleness + 1")
        self.bound = StalenessBound(staleness)
        self.steps_per_rollout = per_job
        job_size = per_job * cfg.data.prompts_per_step * cfg.rollout.n
        if per_job > 1 and cfg.rollout.max_batch_size < job_size:
            logger.warning("a rollout job of %d steps holds %d episodes, but the engine decodes at most "
                           "rollout.max_batch_size=%d together, so the job runs in waves: set rollout.max_batch_size="
                           "%d (and size the engine's KV cache for it) to decode it as one batch", per_job, job_size,
                           cfg.rollout.max_batch_size, job_size)
        self._produce_many: ProduceMany = produce_many or (lambda steps, timers: gather_many(steps, ctx, timers))
        self.ctx = ctx
        self.first_step, self.last_step = first_step, last_step
        self._produce: Produce = produce or (lambda step, timer: gather(step, ctx, timer))
        self.wait_for_sync = (cfg.rollout.placement == "colocated") if wait_for_sync is None else wait_for_sync
        self._cond = threading.Condition()
        self._ready: dict[int, ReadyBatch] = {}
        self._published = ctx.version  # the newest version the trainer published
        self._pending: WeightUpdate | None = None  # published, not yet loaded into the engines
        self._state = "gated"  # gated (waiting for weights or a pause to end) | syncing | rolling | done
        self._gate_step = first_step
        self._paused = 0
        self._stop = False
        self._error: BaseException | None = None
        self._consumed: dict[int, dict[str, int]] = {}
        self.events: list[tuple[str, int, int]] = []  # (what, step, version), in order: for tests and debugging
        self._thread = threading.Thread(target=self._run, name="toolrl-rollouts", daemon=True)
        if start:
            self._thread.start()

    # -- the rollout thread --------------------------------------------------------------------------
    def _gate_open(self, step: int) -> bool:
        return not self._paused and self.bound.may_start(step, self._published)

    def _record(self, what: str, step: int, version: int) -> None:
        self.events.append((what, step, version))

    def _run(self) -> None:
        try:
            step = self.first_step
            while step <= self.last_step:
                steps = list(range(step, min(step + self.steps_per_rollout, self.last_step + 1)))
                with self._cond:
                    self._state, self._gate_step = "gated", step
                    self._cond.notify_all()
                    while not self._stop and not self._gate_open(steps[-1]):  # the job's last batch
                        self._cond.wait()
                    if self._stop:
                        return
                    update, self._pending = self._pending, None
                    self._state = "syncing" if update is not None else "rolling"
                    self._cond.notify_all()
                timers = [PhaseTimer() for _ in steps]
                metrics: dict[str, float] = {}
                t0 = time.perf_counter()
                if update is not None:
                    with timers[0]("engine_sync"):
                        sync = self.ctx.engines.sync_weights(update)
                    metrics.update({(f"timing/{k}" if "seconds" in k else k): v for k, v in sync.items()})
                    self._record("sync", step, update.version)
                    with self._cond:
                        self._state = "rolling"
                        self._cond.notify_all()
                version = self.ctx.engines.version
                for s in steps:
                    self._record("rollout", s, version)
                if len(steps) == 1:
                    produced = [(self._produce(step, timers[0]), dict(self.ctx.sampler.state_dict()))]
                else:
                    produced = self._produce_many(steps, timers)
                busy = time.perf_counter() - t0
                for s, timer, (collected, sampler_state) in zip(steps, timers, produced):
                    batch_metrics = {**metrics, **timer.metrics(), "async/steps_per_rollout": float(len(steps))}
                    batch_metrics.pop("timing/step", None)
                    self._record("ready", s, version)
                    with self._cond:
                        self._ready[s] = ReadyBatch(s, collected, version, sampler_state, busy, batch_metrics)
                        if s == steps[-1]:  # straight to the next gate, in the same critical section:
                            # next_batch sees a due sync
                            self._state, self._gate_step = ("gated", s + 1) if s < self.last_step else ("done", s)
                        self._cond.notify_all()
                step = steps[-1] + 1
        except BaseException as exc:  # noqa: BLE001 - handed to the trainer thread, which re-raises it
            logger.debug("the rollout thread failed", exc_info=True)
            with self._cond:
                self._error = exc
        finally:
            with self._cond:
                self._state = "done"
                self._cond.notify_all()

    # -- the trainer thread --------------------------------------------------------------------------
    def _raise_if_failed(self) -> None:
        if self._error is not None:
            if isinstance(self._error, ToolrlError):
                raise self._error
            raise ToolrlError(f"the asynchronous rollout thread failed: {type(self._error).__name__}: {self._error}",
                              where="trainer.async_rollouts (phases 1-3: prompts, rollouts, rewards)",
                              fix="see the error above (the same code runs synchronously with "
                                  "trainer.async_rollouts.max_staleness=0, which may be easier to debug)"
                              ) from self._error

    def _sync_due(self) -> bool:
        """A weight load the rollout thread is doing, or will do before its next batch.

        Waiting for it before the next update keeps a colocated engine's copy exact: copied later, it would
        hold that update's weights under the older version. With max_staleness 1 this costs nothing: a
        rollout in flight at this point is the batch the step waited for (the next one needs the new weights).
        """
        if self._paused or self._state == "done":
            return False
        if self._state == "syncing":
            return True
        if self._pending is None:
            return False
        if self.steps_per_rollout == 1:  # the rollout in flight is the batch this step waited for
            return True
        # jobs of several steps: a job in flight may have a whole step to go, and a gated job may wait for a later
        # version. The thread loads the newest published weights when it next starts a job; only a load about to
        # start is waited for. Otherwise this step's update may run first, and a colocated engine's copy then
        # holds that update under the older label (a lower bound: the correction uses the engine's own logprobs)
        job_last = min(self._gate_step + self.steps_per_rollout - 1, self.last_step)
        return self._state == "gated" and self.bound.may_start(job_last, self._published)

    def next_batch(self, step: int) -> ReadyBatch:
        """Batch `step` (waits for it); raises the rollout thread's error if it failed."""
        if not self.first_step <= step <= self.last_step:
            raise ValueError(f"batch {step} is outside this pipeline's steps {self.first_step}..{self.last_step}")
        t0 = time.perf_counter()
        with self._cond:
            while step not in self._ready and self._error is None and self._state != "done":
                self._cond.wait()
            if step not in self._ready:  # batches sampled before a failure are still handed out
                self._raise_if_failed()
                raise ToolrlError(f"the rollout thread ended without batch {step}", where="toolrl.trainer.pipeline",
                                  fix="this is a bug in toolrl's asynchronous pipeline; please report it")
            ready = self._ready.pop(step)
            got_batch = time.perf_counter()
            while self.wait_for_sync and self._sync_due() and self._error is None:
                self._cond.wait()
            depth = len(self._ready)
            ahead = (self._gate_step if self._state != "done" else self.last_step + 1) - step - 1
        wait = time.perf_counter() - t0
        lag = self.bound.check_batch(step, (t.weight_version for t in ready.collected.trajectories))
        self._consumed[step] = ready.sampler_state
        for old in [s for s in self._consumed if s < step - 1]:
            del self._consumed[old]
        self._record("train", step, ready.version)
        ready.metrics.update({
            "async/max_staleness": float(self.bound.max_staleness),
            "async/queue_depth": float(depth),
            "async/batches_ahead": float(max(ahead, 0)),
            "async/wait_seconds": wait,
            "async/sync_wait_seconds": time.perf_counter() - got_batch,
            "async/rollout_overlap": min(1.0, max(0.0, 1.0 - (got_batch - t0) / max(ready.busy_seconds, 1e-9))),
            "async/batch_lag": float(lag),
        })
        return ready

    def publish(self, update: WeightUpdate) -> None:
        """New weights from the trainer; the rollout thread loads the newest before its next batch."""
        with self._cond:
            if update.version <= self._published:
                raise ToolrlError(f"weight version {update.version} published after {self._published}",
                                  where="toolrl.trainer.pipeline", fix="publish each update's version once, in order")
            self._published, self._pending = update.version, update
            self._record("publish", update.version, update.version)
            self._cond.notify_all()

    @property
    def published_version(self) -> int:
        return self._published

    def sampler_state(self, step: int) -> dict[str, int]:
        """The sampler after batch `step` (the last batch trained): what a checkpoint at `step` saves."""
        if step not in self._consumed:
            raise ToolrlError(f"no sampler state for step {step} (steps trained: {sorted(self._consumed)})",
                              where="toolrl.trainer.pipeline", fix="save right after train_step(step, ...)")
        return dict(self._consumed[step])

    @contextlib.contextmanager
    def paused(self, sync: bool = True) -> Iterator[None]:
        """The rollout thread holds between batches; with `sync` the engines get the newest weights first
        (evaluation sees what synchronous mode shows). The engines may then be used from this thread."""
        with self._cond:
            self._paused += 1
            while self._state not in _IDLE_STATES and self._error is None:
                self._cond.wait()
            update = self._pending if sync else None
            if update is not None:
                self._pending = None
        try:
            self._raise_if_failed()
            if update is not None:
                self.ctx.engines.sync_weights(update)
                self._record("sync", self._gate_step, update.version)
            yield
        finally:
            with self._cond:
                self._paused -= 1
                self._cond.notify_all()

    def close(self, timeout: float = 120.0) -> None:
        """Stop the thread (a rollout in flight finishes first; its batch is dropped)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("the rollout thread did not stop within %.0f s (a rollout in flight); leaving it",
                               timeout)

    def __enter__(self) -> AsyncRollouts:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def make_pipeline(ctx: StepContext, first_step: int, last_step: int) -> AsyncRollouts | None:
    """An AsyncRollouts when the config asks for asynchronous rollouts (max_staleness > 0), else None."""
    if not ctx.cfg.trainer.async_rollouts.max_staleness or first_step > last_step:
        return None
    return AsyncRollouts(ctx, first_step, last_step)
