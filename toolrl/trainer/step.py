"""One training step, top to bottom, on the driver.

    1. sample prompts                      (the task sampler; seeded, resumable)
    2. n rollouts per prompt               (the rollout engines; trajectories carry their weight version)
    3. rewards                             (weighted reward plugins -> one score per sample)
       engines.sleep()                     (rollout.sleep_during_update: the engine's memory goes to the update)
    4. reference logprobs, values, old logprobs   (reference / critic / trainer group, overlapped)
    5. KL penalty in the reward (PPO) and advantages   (the registered estimator, GRPO groups by task id)
    6. update: the trainer group (and the critic, at the same time); inside the ranks
       `toolrl.trainer.optimize` runs ppo_epochs x mini-batches x micro-batches
       (the ranks empty the CUDA cache after it when the engine sleeps)
       engines.wake()
    7. weight sync: the new weights (version + 1) to the rollout engines
    8. KL controller and metrics

Every phase is one call on a role from `toolrl.trainer.roles`; which processes
answer it (one rank or N, colocated or separate engines) was decided when the
run started (`toolrl.trainer.group.start_roles`).

Asynchronous mode (`trainer.async_rollouts.max_staleness` > 0): phases 1-3 run
in the background thread of `toolrl.trainer.pipeline.AsyncRollouts`, which
also does the weight sync; `train_step(step, ctx, pipeline)` takes the batch
from it, and phase 7 publishes the new weights to it. A batch sampled with
older weights than the trainer's (lag > 0) gets decoupled-PPO old logprobs:
the trainer's own before the update (the proximal policy), and per-token
importance weights min(exp(proximal - engine), cap) (`async_rollouts.is_cap`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from toolrl.algorithms.advantages import AdvantageInput
from toolrl.algorithms.kl import kl_estimate
from toolrl.algorithms.losses import masked_mean
from toolrl.algorithms.spec import estimator_needs
from toolrl.errors import ToolrlError
from toolrl.metrics.resources import snapshot
from toolrl.metrics.rollout_stats import reward_metrics, rollout_metrics
from toolrl.metrics.samples import debug_line, per_sample_advantages, sample_records, write_samples
from toolrl.metrics.timing import PhaseTimer
from toolrl.trainer.batch import build_batch
from toolrl.trainer.context import StepContext, gather, step_seed
from toolrl.trainer.roles import PolicyUpdate
from toolrl.trainer.segments import episode_advantages, segment_metrics, segment_rows
from toolrl.types import Trajectory

if TYPE_CHECKING:
    from toolrl.config import Config
    from toolrl.trainer.pipeline import AsyncRollouts

logger = logging.getLogger(__name__)

def sleeps_during_update(cfg: Config, device: str) -> bool:
    """Whether the engine releases its memory for the update (rollout.sleep_during_update; `device`: the
    trainer's, e.g. 'cuda:0'). 'auto' = a colocated vllm/sglang engine on CUDA, synchronous rollouts only."""
    if cfg.trainer.async_rollouts.max_staleness:
        return False
    want = cfg.rollout.sleep_during_update
    if want == "auto":
        return (cfg.rollout.placement == "colocated" and cfg.rollout.backend in ("vllm", "sglang")
                and str(device).startswith("cuda"))
    return bool(want)


def sleep_backend_args(backend: str) -> dict[str, Any]:
    """The backend_args that give a backend a working sleep()/wake() (set unless the user set them)."""
    return {"vllm": {"enable_sleep_mode": True}, "sglang": {"enable_memory_saver": True}}.get(backend, {})


def train_step(step: int, ctx: StepContext, pipeline: AsyncRollouts | None = None) -> dict[str, float]:
    """One step; with `pipeline` (asynchronous mode) its batch comes from the pipeline and the new weights go
    to it (see the module docstring)."""
    cfg, alg = ctx.cfg, ctx.cfg.algorithm
    timer = PhaseTimer()
    seed = step_seed(cfg.trainer.seed, step)
    if ctx.sleep is None:
        ctx.sleep = pipeline is None and sleeps_during_update(cfg, ctx.trainer.info().device)
    sleep = ctx.sleep and pipeline is None

    # 1-3. prompts, rollouts, rewards: here, or from the pipeline's background thread (sampled ahead)
    metrics: dict[str, float] = {}
    if pipeline is None:
        got = gather(step, ctx, timer)
    else:
        with timer("rollout_wait"):
            ready = pipeline.next_batch(step)
        got = ready.collected
        metrics.update(ready.metrics)
    trajectories, results = got.trajectories, got.results
    group_ids = prompt_groups(trajectories)
    metrics.update(got.metrics)
    valid = [s is not None for s in got.scores]
    scores = torch.tensor([s if s is not None else 0.0 for s in got.scores], dtype=torch.float32)
    metrics.update(reward_metrics(results, cfg.trainer.accuracy_reward, cfg.trainer.success_threshold))
    ctx.failed_steps = failed_episodes_check(step, trajectories, ctx.failed_steps)
    metrics.update(no_signal_check(step, scores, valid, group_ids, group_based=estimator_needs(ctx.estimator).groups))
    if sleep:  # the engine's KV cache (and weights) go back to the device for phases 4-6
        with timer("sleep"):
            ctx.engines.sleep()

    # 4. the batch, then reference logprobs, critic values and old logprobs where needed (overlapped). A stale
    #    batch (sampled with older weights, async mode) trains against the trainer's logprobs before the update
    #    (the proximal policy) with importance weights proximal/engine per token.
    sampled_with = ctx.version
    lag = sampled_with - min((t.weight_version for t in trajectories), default=sampled_with)
    is_cap = stale_is_cap(cfg) if lag > 0 else None
    rows = segment_rows(trajectories, group_ids, valid)  # an agent program's earlier segments: rows of their own
    metrics.update(segment_metrics(rows))
    batch = build_batch(rows.trajectories, rows.group_ids, rows.valid, ctx.pad_token_id)
    pending = {}
    if ctx.reference is not None:
        pending["ref_logprobs"] = ctx.reference.ref_logprobs(batch)
    if ctx.critic is not None:
        pending["values"] = ctx.critic.values(batch)
    if needs_old_logprobs(cfg, len(batch), has_reference=ctx.reference is not None):
        pending["old_logprobs"] = ctx.trainer.logprobs(batch)
    with timer("forward"):
        for key, result in pending.items():
            batch.extras[key] = result.get()

    # 5. KL penalty in the reward (PPO default), then advantages from the registered estimator
    token_rewards = None
    if ctx.reference is not None and cfg.kl_in == "reward" and ctx.kl_ctl.value > 0:
        kl = kl_estimate(batch["old_logprobs"], batch["ref_logprobs"], alg.kl_estimator) * batch.response_mask
        token_rewards = -ctx.kl_ctl.value * kl
        metrics["reward/kl_penalty"] = float(token_rewards.sum(-1).mean())
    adv = episode_advantages(  # the estimator sees the episodes; each earlier segment gets its episode's advantage
        ctx.estimator,
        AdvantageInput(scores=scores, response_mask=batch.response_mask, group_ids=group_ids,
                       valid=batch.valid, token_rewards=token_rewards, values=batch.get("values")),
        alg, rows,
    )
    batch.extras["advantages"] = adv.advantages * batch.response_mask
    if adv.returns is not None:
        batch.extras["returns"] = adv.returns
    metrics["actor/advantage_abs"] = float(masked_mean(batch["advantages"].abs(), batch.response_mask))
    log_samples(step, cfg, trajectories, results, batch, group_ids)

    # 6. update the policy (and the critic at the same time)
    with timer("update"):
        policy_stats = ctx.trainer.update(PolicyUpdate(batch, ctx.kl_ctl.value, seed, is_cap=is_cap))
        critic_stats = ctx.critic.update(batch, seed) if ctx.critic is not None else None
        metrics.update(policy_stats.get())
        if critic_stats is not None:
            metrics.update(critic_stats.get())
    if sleep:
        with timer("wake"):
            ctx.engines.wake()

    # 7. weight sync: the engines sample the next step with version + 1 (async: the pipeline's thread loads
    #    them before its next batch)
    ctx.version += 1
    if pipeline is None:
        with timer("sync"):
            sync = ctx.engines.sync_weights(ctx.trainer.weights(ctx.version))
        metrics.update({(f"timing/{k}" if "seconds" in k else k): v for k, v in sync.items()})
    else:
        with timer("publish"):
            pipeline.publish(ctx.trainer.weights(ctx.version))

    # 8. KL controller and metrics
    metrics["actor/kl_coef"] = ctx.kl_ctl.value
    if "actor/kl" in metrics:
        ctx.kl_ctl.update(metrics["actor/kl"], len(batch))
    metrics.update(rollout_metrics(trajectories))
    metrics.update(weight_version_metrics(trajectories, sampled_with))
    metrics.update(timer.metrics())
    metrics.update(snapshot("driver"))  # the ranks add theirs to their update stats
    sampled = sum(t.num_sampled_tokens for t in trajectories)
    rollout_seconds = metrics.get("timing/rollout", 0.0)
    metrics["timing/rollout_tokens_per_s"] = sampled / max(rollout_seconds, 1e-9)
    metrics["timing/update_tokens_per_s"] = float(batch.attention_mask.sum()) / max(timer.seconds["update"], 1e-9)
    return metrics


def stale_is_cap(cfg: Config) -> float | None:
    """The importance-weight cap for a stale batch: algorithm.tis_cap if set, else async_rollouts.is_cap."""
    return cfg.algorithm.tis_cap if cfg.algorithm.tis_cap is not None else cfg.trainer.async_rollouts.is_cap


def log_samples(step: int, cfg: Config, trajectories: Sequence[Trajectory], results: Sequence[Any],
                batch: Any, group_ids: Sequence[str]) -> None:
    """The step's samples to <output_dir>/samples/ (trainer.log_samples); with rollout.debug also to the log."""
    if not (cfg.trainer.log_samples or cfg.rollout.debug):
        return
    n = len(trajectories)  # the episodes' own rows come first, their earlier segments after them
    advantages = per_sample_advantages(batch["advantages"][:n], batch.response_mask[:n])
    if cfg.trainer.log_samples:
        write_samples(cfg.trainer.output_dir, step, trajectories, results, advantages, group_ids,
                      max_samples=cfg.trainer.log_samples_max)
    if cfg.rollout.debug:  # rewards and advantages beside the agent loop's per-sample debug lines
        for rec in sample_records(step, trajectories, results, advantages, group_ids):
            logger.log(max(logging.INFO, logger.getEffectiveLevel()), "[step %d] %s", step, debug_line(rec))


def prompt_groups(trajectories: Sequence[Trajectory]) -> list[str]:
    """The GRPO group of each trajectory: its task id. A task drawn twice in one step gets one group per draw
    (the k-th trajectory with a given (task id, sample index) belongs to draw k), whatever the list order."""
    seen: Counter[tuple[str, int]] = Counter()
    out = []
    for t in trajectories:
        draw = seen[(t.task_id, t.sample_index)]
        seen[(t.task_id, t.sample_index)] += 1
        out.append(t.task_id if draw == 0 else f"{t.task_id}#{draw}")
    return out


def weight_version_metrics(trajectories: Sequence[Trajectory], trainer_version: int) -> dict[str, float]:
    """rollout/weight_version (oldest version sampled with) and rollout/weight_lag (updates it was behind)."""
    if not trajectories:
        return {}
    oldest = min(t.weight_version for t in trajectories)
    return {"rollout/weight_version": float(oldest), "rollout/weight_lag": float(trainer_version - oldest)}


def needs_old_logprobs(cfg: Config, batch_size: int, has_reference: bool) -> bool:
    """Old logprobs need their own pass when the policy moves before the last use of them.

    With one optimizer step per batch (one epoch, one mini-batch) the policy is
    unchanged while the loss is computed, so the update uses its own detached
    logprobs as the old ones (ratio 1) and a forward pass is saved. The KL
    penalty in the reward needs them before the update.
    """
    mini = cfg.trainer.mini_batch_size or batch_size
    optimizer_steps = cfg.trainer.ppo_epochs * (batch_size // mini)
    return optimizer_steps > 1 or (has_reference and cfg.kl_in == "reward")


FAILED_STEPS_LIMIT = 3  # steps in a row with every episode ended by an error before the run stops


def failed_episodes_check(step: int, trajectories: Sequence[Trajectory], streak: int) -> int:
    """When every episode of the step ended with an error (an environment that cannot start, a prompt too long
    for the engine...), nothing can be learned: warn with the most common error, and raise after
    FAILED_STEPS_LIMIT such steps in a row, so a misconfigured run stops instead of training on nothing.
    Returns the new streak (0 once any episode completes)."""
    errors = [t.error for t in trajectories if t.error is not None]
    if not trajectories or len(errors) < len(trajectories):
        return 0
    common, count = Counter(errors).most_common(1)[0]
    streak += 1
    if streak >= FAILED_STEPS_LIMIT:
        raise ToolrlError(
            f"every episode of the last {streak} steps ended with an error, so nothing is being learned. The most "
            f"common error ({count} of {len(errors)} episodes at step {step}): {common}", where="rollout",
            fix="fix the cause in the error above; `toolrl inspect` on the run's samples (trainer.log_samples) "
                "shows every episode's error, and rollout.debug=true logs each episode")
    logger.warning("step %d: all %d episodes ended with an error (%d of them: %s); the run stops after %d such "
                   "steps in a row", step, len(errors), count, common, FAILED_STEPS_LIMIT)
    return streak


def no_signal_check(step: int, scores: torch.Tensor, valid: Sequence[bool], group_ids: Sequence[str],
                    group_based: bool) -> dict[str, float]:
    """Warn when the step cannot teach anything; report the share of groups without reward variance."""
    values = scores.tolist()  # once: iterating a tensor makes a tensor per element
    included = [s for s, v in zip(values, valid) if v]
    groups: dict[str, list[float]] = {}
    for s, v, g in zip(values, valid, group_ids):
        if v:
            groups.setdefault(g, []).append(s)
    flat = [g for g in groups.values() if len(g) < 2 or max(g) == min(g)]
    out = {"reward/zero_std_groups": len(flat) / max(len(groups), 1)}
    if not included:
        logger.warning("step %d: every sample was excluded from the update (reward None or infrastructure "
                       "errors); see reward/excluded and reward/infra_error", step)
    elif all(s == 0.0 for s in included):
        logger.warning(
            "step %d: the reward is 0 for all %d samples, so there is no learning signal (the loss will not "
            "decrease). Check that the reward matches what the model writes: run with rollout.debug=true to see "
            "completions, or add a shaping reward (e.g. a format reward) that gives partial credit.",
            step, len(included))
    elif group_based and groups and len(flat) == len(groups):
        logger.warning("step %d: every prompt's samples got the same reward, so all group-relative advantages are "
                       "0; raise rollout.n or rollout.temperature, or use easier tasks", step)
    return out
