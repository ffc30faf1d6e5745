"""One training step, top to bottom.

    1. sample prompts                      (the task sampler; seeded, resumable)
    2. n rollouts per prompt               (agent loop on the policy worker, live weights)
    3. rewards                             (weighted reward plugins -> one score per sample)
    4. reference logprobs, values, old logprobs   (reference / critic / policy workers)
    5. KL penalty in the reward (PPO) and advantages   (the registered estimator)
    6. update: ppo_epochs x mini-batches, gradient accumulation over micro-batches:
       recompute logprobs, PPO-clipped loss on loss-masked tokens, KL to the
       reference (GRPO), entropy bonus -> clip gradients -> optimizer step;
       the critic fits the returns in parallel (PPO)
    7. weights to the rollout backend, KL controller, metrics

`train_step` runs on the driver and talks to the Ray workers (`workers.py` holds
their plumbing); `update_policy` and `update_critic` run inside the workers and
are the optimisation itself. Everything else (padding, forward passes,
checkpoints, sinks) lives in the modules imported here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from toolrl.algorithms.advantages import AdvantageInput
from toolrl.algorithms.kl import KLController, kl_estimate
from toolrl.algorithms.losses import agg_denominator, aggregate, masked_mean, policy_loss, value_loss
from toolrl.metrics.rollout_stats import reward_metrics, rollout_metrics
from toolrl.metrics.timing import PhaseTimer
from toolrl.rewards import compute_rewards_sync
from toolrl.trainer.batch import TrainBatch, build_batch
from toolrl.trainer.forward import critic_values, response_logprobs
from toolrl.trainer.sampler import TaskSampler
from toolrl.types import Task

logger = logging.getLogger(__name__)


@dataclass
class StepContext:
    """What a step needs from the run: config, data, reward and estimator functions, worker handles."""

    cfg: Any  # toolrl.config.Config
    tasks: Sequence[Task]
    sampler: TaskSampler
    rewards: Sequence[Any]  # toolrl.rewards.PreparedReward
    estimator: Callable[..., Any]
    kl_ctl: KLController
    policy: Any  # Ray actor handle: rollout, logprobs, update
    reference: Any | None  # handle with ref_logprobs (None: no KL term)
    critic: Any | None  # handle with critic_values, critic_update (None: no critic)
    pad_token_id: int


def step_seed(seed: int, step: int) -> int:
    """A distinct, reproducible seed per (run seed, step): resuming at step k reseeds exactly as step k did."""
    return (seed * 1_000_003 + step * 7_919) % (2**31 - 1)


def train_step(step: int, ctx: StepContext) -> dict[str, float]:
    import ray

    from toolrl.trainer.cluster import ray_get, ray_get_all  # ray.get, re-raising a worker's ToolrlError

    cfg, alg = ctx.cfg, ctx.cfg.algorithm
    timer = PhaseTimer()
    seed = step_seed(cfg.trainer.seed, step)

    # 1. sample prompts
    prompts = [ctx.tasks[i] for i in ctx.sampler.next_indices()]

    # 2. n rollouts per prompt through the agent loop, on the policy worker (it holds the live weights)
    with timer("rollout"):
        trajectories = ray_get(ctx.policy.rollout.remote(prompts, cfg.rollout.n, seed))
    group_ids = [f"{slot}" for slot in range(len(prompts)) for _ in range(cfg.rollout.n)]

    # 3. rewards: weighted sum of the configured reward plugins; None = excluded from the update
    with timer("reward"):
        results, reward_m = compute_rewards_sync(trajectories, prompts, ctx.rewards)
    metrics = {k.replace("reward/seconds/", "timing/reward/"): v for k, v in reward_m.items()}
    valid = [r.total is not None for r in results]
    scores = torch.tensor([r.total if r.total is not None else 0.0 for r in results], dtype=torch.float32)
    metrics.update(reward_metrics(results, cfg.trainer.accuracy_reward, cfg.trainer.success_threshold))
    metrics.update(no_signal_check(step, scores, valid, group_ids, group_based=ctx.critic is None))

    # 4. the batch, then reference logprobs, critic values and old logprobs where needed
    batch = build_batch(trajectories, group_ids, valid, ctx.pad_token_id)
    batch_ref = ray.put(batch)
    pending = {}
    if ctx.reference is not None:
        pending["ref_logprobs"] = ctx.reference.ref_logprobs.remote(batch_ref)
    if ctx.critic is not None:
        pending["values"] = ctx.critic.critic_values.remote(batch_ref)
    if needs_old_logprobs(cfg, len(batch), has_reference=ctx.reference is not None):
        pending["old_logprobs"] = ctx.policy.logprobs.remote(batch_ref)
    with timer("forward"):
        for key, ref in pending.items():
            batch.extras[key] = ray_get(ref)

    # 5. KL penalty in the reward (PPO default), then advantages from the registered estimator
    token_rewards = None
    if ctx.reference is not None and cfg.kl_in == "reward" and ctx.kl_ctl.value > 0:
        kl = kl_estimate(batch["old_logprobs"], batch["ref_logprobs"], alg.kl_estimator) * batch.response_mask
        token_rewards = -ctx.kl_ctl.value * kl
        metrics["reward/kl_penalty"] = float(token_rewards.sum(-1).mean())
    adv = ctx.estimator(
        AdvantageInput(scores=scores, response_mask=batch.response_mask, group_ids=group_ids,
                       valid=batch.valid, token_rewards=token_rewards, values=batch.get("values")),
        alg,
    )
    batch.extras["advantages"] = adv.advantages * batch.response_mask
    if adv.returns is not None:
        batch.extras["returns"] = adv.returns
    metrics["actor/advantage_abs"] = float(masked_mean(batch["advantages"].abs(), batch.response_mask))

    # 6. update the policy (and the critic, in parallel); 7. the policy worker then pushes the
    #    new weights to its rollout backend (the hf backend already generates with them)
    with timer("update"):
        batch_ref = ray.put(batch)
        updates = [ctx.policy.update.remote(batch_ref, ctx.kl_ctl.value, seed)]
        if ctx.critic is not None:
            updates.append(ctx.critic.critic_update.remote(batch_ref, seed))
        for stats in ray_get_all(updates):
            metrics.update(stats)

    # 7. KL controller and metrics
    metrics["actor/kl_coef"] = ctx.kl_ctl.value
    if "actor/kl" in metrics:
        ctx.kl_ctl.update(metrics["actor/kl"], len(batch))
    metrics.update(rollout_metrics(trajectories))
    metrics.update(timer.metrics())
    sampled = sum(t.num_sampled_tokens for t in trajectories)
    metrics["timing/rollout_tokens_per_s"] = sampled / max(timer.seconds["rollout"], 1e-9)
    metrics["timing/update_tokens_per_s"] = float(batch.attention_mask.sum()) / max(timer.seconds["update"], 1e-9)
    return metrics


def needs_old_logprobs(cfg: Any, batch_size: int, has_reference: bool) -> bool:
    """Old logprobs need their own pass when the policy moves before the last use of them.

    With one optimizer step per batch (one epoch, one mini-batch) the policy is
    unchanged while the loss is computed, so the update uses its own detached
    logprobs as the old ones (ratio 1) and a forward pass is saved. The KL
    penalty in the reward needs them before the update.
    """
    mini = cfg.trainer.mini_batch_size or batch_size
    optimizer_steps = cfg.trainer.ppo_epochs * (batch_size // mini)
    return optimizer_steps > 1 or (has_reference and cfg.kl_in == "reward")


def no_signal_check(step: int, scores: torch.Tensor, valid: Sequence[bool], group_ids: Sequence[str],
                    group_based: bool) -> dict[str, float]:
    """Warn when the step cannot teach anything; report the share of groups without reward variance."""
    included = [float(s) for s, v in zip(scores, valid) if v]
    groups: dict[str, list[float]] = {}
    for s, v, g in zip(scores.tolist(), valid, group_ids):
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


# ----------------------------------------------------------------------------------------------
# Inside the workers: the optimisation
# ----------------------------------------------------------------------------------------------


def mini_batches(batch: TrainBatch, size: int, group_size: int, generator: torch.Generator,
                 shuffle: bool) -> list[TrainBatch]:
    """Split into mini-batches of `size`; whole groups stay together, group order shuffled if asked."""
    n_groups = len(batch) // group_size
    order = torch.randperm(n_groups, generator=generator).tolist() if shuffle else list(range(n_groups))
    index = [g * group_size + k for g in order for k in range(group_size)]
    return [batch.select(index[i : i + size]) for i in range(0, len(index), size)]


def loss_terms(logprobs: torch.Tensor, entropy: torch.Tensor | None, micro: TrainBatch, alg: Any, kl_in: str,
               kl_coef: float, denominator: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The policy loss of one micro-batch: PPO-clip + KL to the reference (if in the loss) - entropy bonus.

    Every term is aggregated over `micro.response_mask` only, so tool-result
    tokens, padding and excluded samples contribute exactly nothing.
    """
    mask = micro.response_mask
    old = micro.get("old_logprobs")
    old = logprobs.detach() if old is None else old
    pg, pg_stats = policy_loss(logprobs, old, micro["advantages"], mask, clip_low=alg.clip_ratio,
                               clip_high=alg.clip_ratio_high, agg=alg.loss_agg, denominator=denominator)
    total = pg
    stats = {"loss/policy": float(pg.detach()), "actor/clip_frac": pg_stats.clip_frac, "actor/approx_kl": pg_stats.approx_kl,
             "actor/ratio_max": pg_stats.ratio_max}
    ref = micro.get("ref_logprobs")
    if ref is not None:
        kl = kl_estimate(logprobs, ref, alg.kl_estimator)
        stats["actor/kl"] = float(masked_mean(kl.detach(), mask))
        if kl_in == "loss" and kl_coef > 0:
            kl_loss = aggregate(kl, mask, alg.loss_agg, denominator)
            total = total + kl_coef * kl_loss
            stats["loss/kl"] = float(kl_loss.detach())
    if entropy is not None:
        stats["actor/entropy"] = float(masked_mean(entropy.detach(), mask))
        if alg.entropy_coef > 0:
            ent = aggregate(entropy, mask, alg.loss_agg, denominator)
            total = total - alg.entropy_coef * ent
            stats["loss/entropy"] = float(ent.detach())
    stats["loss/total"] = float(total.detach())
    return total, stats


class _Mean:
    """Token-weighted means of micro-batch statistics, and sums of additive losses per optimizer step."""

    ADDITIVE = ("loss/policy", "loss/kl", "loss/entropy", "loss/total", "loss/value")

    def __init__(self) -> None:
        self.weighted: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.step_sums: dict[str, float] = {}
        self.steps: list[dict[str, float]] = []
        self.skipped = 0

    def add(self, stats: Mapping[str, float], weight: float) -> None:
        for k, v in stats.items():
            if k in self.ADDITIVE:
                self.step_sums[k] = self.step_sums.get(k, 0.0) + v
            else:
                self.weighted[k] = self.weighted.get(k, 0.0) + v * weight
                self.weights[k] = self.weights.get(k, 0.0) + weight

    def end_step(self, **values: float) -> None:
        self.steps.append({**self.step_sums, **values})
        self.step_sums = {}

    def result(self) -> dict[str, float]:
        out = {k: self.weighted[k] / self.weights[k] for k in self.weighted if self.weights[k] > 0}
        keys = {k for s in self.steps for k in s}
        for k in keys:
            vals = [s[k] for s in self.steps if k in s]
            out[k] = sum(vals) / len(vals)
        return out


def update_policy(model: Any, optimizer: torch.optim.Optimizer, batch: TrainBatch, cfg: Any, kl_coef: float,
                  seed: int) -> dict[str, float]:
    """ppo_epochs x mini-batches x micro-batches of the clipped policy loss; one optimizer step per mini-batch."""
    alg, tr = cfg.algorithm, cfg.trainer
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    mini_size = tr.mini_batch_size or len(batch)
    # mini-batches hold whole prompt groups where they can (GRPO/RLOO always), so shared prompts run once
    group = cfg.rollout.n if mini_size % cfg.rollout.n == 0 else 1
    shuffle = tr.ppo_epochs > 1 or mini_size < len(batch)
    generator = torch.Generator().manual_seed(seed)
    temperature = cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0
    share = tr.share_prompt and not cfg.model.gradient_checkpointing  # a group's prompt runs once per pass
    acc = _Mean()
    with train_mode(model, cfg.model.gradient_checkpointing or cfg.model.lora.dropout > 0):
        for epoch in range(tr.ppo_epochs):
            for m, mini in enumerate(mini_batches(batch, mini_size, group, generator, shuffle)):
                denominator = agg_denominator(mini.response_mask, alg.loss_agg)
                optimizer.zero_grad(set_to_none=True)
                for micro in mini.split(tr.micro_batch_size):
                    micro = micro.trimmed().to(device)
                    tokens = float(micro.response_mask.sum())
                    logprobs, entropy = response_logprobs(model, micro, temperature, with_entropy=True,
                                                          entropy_grad=alg.entropy_coef > 0, share_prompt=share)
                    loss, stats = loss_terms(logprobs, entropy, micro, alg, cfg.kl_in, kl_coef, denominator)
                    if tokens > 0:
                        loss.backward()
                    if epoch == 0 and m == 0 and tokens > 0:  # the weights that sampled: compare with the rollout
                        diff = (logprobs.detach() - micro["rollout_logprobs"]).abs()
                        stats["actor/rollout_logprob_diff"] = float(masked_mean(diff, micro.response_mask))
                    acc.add(stats, weight=tokens)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, tr.max_grad_norm))
                if math.isfinite(grad_norm):
                    optimizer.step()
                else:
                    acc.skipped += 1
                    logger.warning("non-finite gradient norm (%s): optimizer step skipped", grad_norm)
                acc.end_step(**{"actor/grad_norm": grad_norm})
    out = acc.result()
    out["actor/skipped_steps"] = float(acc.skipped)
    out["actor/lr"] = optimizer.param_groups[0]["lr"]
    return out


@contextmanager
def train_mode(model: Any, enabled: bool) -> Iterator[None]:
    """Train mode for the update when gradient checkpointing or LoRA dropout needs it; eval mode otherwise
    (no dropout: the update recomputes exactly what the rollout sampled)."""
    if enabled:
        model.train()
    try:
        yield
    finally:
        model.eval()


def update_critic(critic: Any, optimizer: torch.optim.Optimizer, batch: TrainBatch, cfg: Any,
                  seed: int) -> dict[str, float]:
    """Fit the critic to the returns with the clipped value loss (same epochs and mini-batches as the policy)."""
    alg, tr = cfg.algorithm, cfg.trainer
    device = next(critic.parameters()).device
    params = [p for p in critic.parameters() if p.requires_grad]
    mini_size = tr.mini_batch_size or len(batch)
    group = cfg.rollout.n if mini_size % cfg.rollout.n == 0 else 1
    share = tr.share_prompt and not cfg.model.gradient_checkpointing
    generator = torch.Generator().manual_seed(seed + 1)
    acc = _Mean()
    for _ in range(tr.ppo_epochs):
        for mini in mini_batches(batch, mini_size, group, generator, tr.ppo_epochs > 1 or mini_size < len(batch)):
            denominator = agg_denominator(mini.response_mask, alg.loss_agg)
            optimizer.zero_grad(set_to_none=True)
            for micro in mini.split(tr.micro_batch_size):
                micro = micro.trimmed().to(device)
                tokens = float(micro.response_mask.sum())
                values = critic_values(critic, micro, share)
                vl, clip_frac = value_loss(values, micro["values"], micro["returns"], micro.response_mask,
                                           clip=alg.value_clip, agg=alg.loss_agg, denominator=denominator)
                if tokens > 0:
                    (alg.vf_coef * vl).backward()
                acc.add({"loss/value": float(vl.detach()), "critic/clip_frac": clip_frac,
                         "critic/value_mean": float(masked_mean(values.detach(), micro.response_mask))}, tokens)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, tr.max_grad_norm))
            if math.isfinite(grad_norm):
                optimizer.step()
            acc.end_step(**{"critic/grad_norm": grad_norm})
    out = acc.result()
    returns, values, mask = batch["returns"], batch["values"], batch.response_mask
    out["critic/value_loss_before"] = float(aggregate(0.5 * (values - returns) ** 2, mask, alg.loss_agg))
    var_r = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    var_res = masked_mean((returns - values - masked_mean(returns - values, mask)) ** 2, mask)
    out["critic/explained_var"] = float(1 - var_res / var_r) if float(var_r) > 0 else 0.0
    out["critic/returns_mean"] = float(masked_mean(returns, mask))
    out["critic/lr"] = optimizer.param_groups[0]["lr"]
    return out
