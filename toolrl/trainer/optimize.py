"""Inside the trainer ranks: the optimisation. One loop (`optimize`) serves the policy and the critic.

    for epoch in ppo_epochs:
        for mini in mini-batches (whole GRPO groups, group order shuffled when asked):
            denominator = tokens (or sequences) of the WHOLE mini-batch
            for micro in this rank's share of mini, in micro-batches:
                loss(micro) / denominator -> backward          (gradient accumulation)
            gradients summed over the ranks                     (data parallel)
            clip -> optimizer step

Data parallel: every rank gets the same batch and draws the same mini-batches
(same seed); `rank_share` splits each mini-batch across the ranks, balanced by
tokens, keeping prompt groups together. Because every rank divides by the
whole mini-batch's denominator and the gradients are summed (not averaged), N
ranks compute the gradient one rank computes; statistics are reduced the same
way. With one rank no collective runs (the laptop path is unchanged).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from toolrl.algorithms.kl import kl_estimate
from toolrl.algorithms.losses import (
    PolicyLossInput,
    agg_denominator,
    aggregate,
    loss_norm_len,
    masked_mean,
    truncated_is_weights,
    value_loss,
)
from toolrl.trainer import compiled
from toolrl.trainer.batch import TrainBatch
from toolrl.trainer.forward import (
    critic_values,
    micro_batches,
    peak_memory,
    response_logprobs,
    uses_gradient_checkpointing,
)
from toolrl.trainer.fsdp import clip_grad_norm

logger = logging.getLogger(__name__)

# the loss of one micro-batch and its statistics, given (micro, denominator, first_pass)
# a micro-batch's loss and its statistics: floats, or detached 0-d tensors that are read back once per optimizer step
# (`StatAccumulator`), so that no statistic makes the host wait for the device between a forward and its backward
Stat = float | torch.Tensor
MicroLoss = Callable[[TrainBatch, float, bool], tuple[torch.Tensor, dict[str, Stat]]]


# ----------------------------------------------------------------------------------------------
# Data parallel: which samples a rank trains on, and the reductions
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataParallel:
    """This process's place in the trainer group. `sum_grads` is False when FSDP reduces gradients itself."""

    rank: int = 0
    world_size: int = 1
    sum_grads: bool = True

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def loss_scale(self) -> float:
        """FSDP averages gradients over the ranks; scaling the loss by N turns that average into the sum."""
        return 1.0 if self.sum_grads or not self.active else float(self.world_size)

    def all_reduce_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        if not self.active or not self.sum_grads:
            return
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(g).to(g.dtype).clone()
            offset += n

    def sum_dicts(self, values: Mapping[str, float]) -> dict[str, float]:
        """Key-wise sums over the ranks (keys missing on a rank count as 0)."""
        if not self.active:
            return dict(values)
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, dict(values))
        out: dict[str, float] = {}
        for part in gathered:
            for k, v in part.items():
                out[k] = out.get(k, 0.0) + float(v)
        return out


def sample_units(batch: TrainBatch, group_size: int) -> list[list[int]]:
    """The batch's samples in units that stay together: prompt groups (by group id) or single samples."""
    if group_size <= 1:
        return [[i] for i in range(len(batch))]
    groups: dict[str, list[int]] = {}
    for i, g in enumerate(batch.group_ids):
        groups.setdefault(g, []).append(i)
    return list(groups.values())


def balanced_shares(weights: Sequence[float], world_size: int) -> list[list[int]]:
    """Unit indices per rank: heaviest unit first onto the lightest rank (ties: lower rank); each share in order."""
    shares: list[list[int]] = [[] for _ in range(world_size)]
    load = [0.0] * world_size
    for u in sorted(range(len(weights)), key=lambda u: (-weights[u], u)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        shares[r].append(u)
        load[r] += weights[u]
    return [sorted(s) for s in shares]


def unit_tokens(batch: TrainBatch, units: Sequence[Sequence[int]]) -> list[float]:
    """Tokens a unit costs in a forward/backward pass (its real prompt + response tokens)."""
    per_sample = batch.attention_mask.sum(-1).tolist()
    return [float(sum(per_sample[i] for i in u)) for u in units]


def rank_shares(batch: TrainBatch, world_size: int, group_size: int) -> list[list[int]]:
    """Sample indices of each rank's share of `batch`, balanced by tokens, prompt groups kept whole."""
    units = sample_units(batch, group_size)
    shares = balanced_shares(unit_tokens(batch, units), world_size)
    return [[i for u in share for i in units[u]] for share in shares]


def mini_batches(batch: TrainBatch, size: int, group_size: int, generator: torch.Generator,
                 shuffle: bool) -> list[TrainBatch]:
    """Split into mini-batches of `size`; whole groups (same group id) stay together, unit order shuffled if asked."""
    units = sample_units(batch, group_size)
    order = torch.randperm(len(units), generator=generator).tolist() if shuffle else list(range(len(units)))
    index = [i for u in order for i in units[u]]
    return [batch.select(index[i : i + size]) for i in range(0, len(index), size)]


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------


def read_floats(values: Sequence[Stat]) -> list[float]:
    """Floats of `values` (floats or 0-d tensors), with one transfer per device instead of one per tensor."""
    out: list[float | None] = [v if not isinstance(v, torch.Tensor) else None for v in values]
    by_device: dict[torch.device, list[int]] = {}
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            by_device.setdefault(v.device, []).append(i)
    for idx in by_device.values():
        read = torch.stack([values[i].detach().reshape(()).to(torch.float64) for i in idx]).tolist()
        for i, x in zip(idx, read):
            out[i] = x
    return [float(x) for x in out]


class StatAccumulator:
    """Token-weighted means of micro-batch statistics, and per-optimizer-step sums of additive losses.

    Statistics may be detached tensors on the device; they are read back together at the end of each optimizer
    step (`end_step`), not one by one as the micro-batches run.
    """

    ADDITIVE = ("loss/policy", "loss/kl", "loss/entropy", "loss/total", "loss/value")

    def __init__(self, dp: DataParallel):
        self.dp = dp
        self.weighted: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.pending: list[tuple[str, Stat, float]] = []  # this optimizer step's (key, value, token weight)
        self.steps: list[dict[str, float]] = []
        self.skipped = 0

    def add(self, stats: Mapping[str, Stat], weight: float) -> None:
        self.pending.extend((k, v, weight) for k, v in stats.items())

    def end_step(self, **values: float) -> None:
        step_sums: dict[str, float] = {}
        for (k, _, weight), v in zip(self.pending, read_floats([v for _, v, _ in self.pending])):
            if k in self.ADDITIVE:
                step_sums[k] = step_sums.get(k, 0.0) + v
            else:
                self.weighted[k] = self.weighted.get(k, 0.0) + v * weight
                self.weights[k] = self.weights.get(k, 0.0) + weight
        self.pending = []
        self.steps.append({**self.dp.sum_dicts(step_sums), **values})

    def result(self) -> dict[str, float]:
        if self.pending:
            raise RuntimeError("StatAccumulator.result() before end_step(): statistics of an unfinished step")
        both = self.dp.sum_dicts({**{f"w:{k}": v for k, v in self.weighted.items()},
                                  **{f"n:{k}": v for k, v in self.weights.items()}})
        out = {k[2:]: v / both[f"n:{k[2:]}"] for k, v in both.items() if k.startswith("w:") and both[f"n:{k[2:]}"] > 0}
        for k in {k for s in self.steps for k in s}:
            vals = [s[k] for s in self.steps if k in s]
            out[k] = sum(vals) / len(vals)
        return out


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


def optimize(model: Any, optimizer: torch.optim.Optimizer, batch: TrainBatch, cfg: Any, *, seed: int,
             micro_loss: MicroLoss, prefix: str, dp: DataParallel) -> StatAccumulator:
    """ppo_epochs x mini-batches x (this rank's) micro-batches of `micro_loss`; one optimizer step per mini-batch.

    Returns the statistics, already reduced over the ranks; `{prefix}/grad_norm` per optimizer step.
    """
    tr = cfg.trainer
    device = next(model.parameters()).device
    widths = compiled.width_multiple(model)  # CUDA-graph layers: micro-batches in few shapes
    params = [p for p in model.parameters() if p.requires_grad]
    mini_size = tr.mini_batch_size or len(batch)
    # mini-batches hold whole prompt groups where they can (GRPO/RLOO always), so shared prompts run once
    group = cfg.rollout.n if mini_size % cfg.rollout.n == 0 else 1
    shuffle = tr.ppo_epochs > 1 or mini_size < len(batch)
    generator = torch.Generator().manual_seed(seed)
    acc = StatAccumulator(dp)
    for epoch in range(tr.ppo_epochs):
        for m, mini in enumerate(mini_batches(batch, mini_size, group, generator, shuffle)):
            denominator = agg_denominator(mini.response_mask, cfg.algorithm.loss_agg, loss_norm_len(cfg))
            mine = mini.select(rank_shares(mini, dp.world_size, group)[dp.rank]) if dp.active else mini
            if not compiled.own_gradients(model, params):  # CUDA-graph layers: gradients zeroed in place
                optimizer.zero_grad(set_to_none=True)
            for micro in micro_batches(mine, tr.micro_batch_size, tr.token_budget, group):
                compiled.micro_batch_begin(model)
                micro = micro.trimmed(widths)
                tokens = float(micro.response_mask.sum())  # on the host, before the copy: no wait for the device
                micro = micro.to(device)
                loss, stats = micro_loss(micro, denominator, epoch == 0 and m == 0)
                if tokens > 0:
                    (loss * dp.loss_scale).backward()
                acc.add(stats, weight=tokens)
            dp.all_reduce_grads(params)
            grad_norm = clip_grad_norm(params, tr.max_grad_norm)  # global norm, also over FSDP2's shards
            if math.isfinite(grad_norm):
                optimizer.step()
            else:
                acc.skipped += 1
                logger.warning("non-finite %s gradient norm (%s): optimizer step skipped", prefix, grad_norm)
            acc.end_step(**{f"{prefix}/grad_norm": grad_norm})
    return acc


# ----------------------------------------------------------------------------------------------
# Policy and critic
# ----------------------------------------------------------------------------------------------


def loss_terms(logprobs: torch.Tensor, entropy: torch.Tensor | None, micro: TrainBatch, alg: Any, kl_in: str,
               kl_coef: float, denominator: float, norm_len: int | None = None,
               is_cap: float | None = None) -> tuple[torch.Tensor, dict[str, Stat]]:
    """The policy loss of one micro-batch: the registered policy loss (`algorithm.policy_loss`: ppo, gspo or a
    plugin's) + KL to the reference (if in the loss) - entropy bonus.

    Every term is aggregated over `micro.response_mask` only, so tool-result
    tokens, padding and excluded samples contribute exactly nothing. With
    `algorithm.tis_cap` the policy loss gets truncated importance weights between
    the trainer's and the rollout engine's logprobs; `is_cap` (a stale batch in
    asynchronous mode) overrides that cap: the old logprobs are then the proximal
    policy's (the trainer's before this update) and the weights correct for the
    older weights that sampled (decoupled PPO).
    """
    from toolrl import plugins

    mask = micro.response_mask
    old = micro.get("old_logprobs")
    old = logprobs.detach() if old is None else old
    is_weights = None
    cap = is_cap if is_cap is not None else alg.tis_cap
    if cap is not None:
        is_weights = truncated_is_weights(old, micro["rollout_logprobs"], mask, cap)
    out = plugins.get("policy_losses", alg.policy_loss)(
        PolicyLossInput(logprobs, old, micro["advantages"], mask, alg.loss_agg, denominator, norm_len, is_weights), alg)
    pg = out.loss
    total = pg
    stats: dict[str, Stat] = {"loss/policy": pg.detach(), **out.stats}
    if is_weights is not None:
        stats["actor/tis_weight_mean"] = masked_mean(is_weights.detach(), mask)
    ref = micro.get("ref_logprobs")
    if ref is not None:
        kl = kl_estimate(logprobs, ref, alg.kl_estimator)
        stats["actor/kl"] = masked_mean(kl.detach(), mask)
        if kl_in == "loss" and kl_coef > 0:
            kl_loss = aggregate(kl, mask, alg.loss_agg, denominator, norm_len)
            total = total + kl_coef * kl_loss
            stats["loss/kl"] = kl_loss.detach()
    if entropy is not None:
        stats["actor/entropy"] = masked_mean(entropy.detach(), mask)
        if alg.entropy_coef > 0:
            ent = aggregate(entropy, mask, alg.loss_agg, denominator, norm_len)
            total = total - alg.entropy_coef * ent
            stats["loss/entropy"] = ent.detach()
    stats["loss/total"] = total.detach()
    return total, stats


def update_policy(model: Any, optimizer: torch.optim.Optimizer, batch: TrainBatch, cfg: Any, kl_coef: float,
                  seed: int, dp: DataParallel | None = None, is_cap: float | None = None) -> dict[str, float]:
    """The clipped policy loss through `optimize`; statistics under actor/* and loss/*. `is_cap`: see `loss_terms`."""
    alg = cfg.algorithm
    temperature = cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0
    checkpointing = uses_gradient_checkpointing(model)  # decided at load (model.gradient_checkpointing; None: CUDA)
    # a group's prompt runs once per pass (not under checkpointing, nor with compiled layers: its KV cache)
    share = cfg.trainer.share_prompt and not checkpointing and not compiled.is_prepared(model)

    def micro_loss(micro: TrainBatch, denominator: float, first_pass: bool) -> tuple[torch.Tensor, dict[str, Stat]]:
        logprobs, entropy = response_logprobs(model, micro, temperature, with_entropy=True,
                                              entropy_grad=alg.entropy_coef > 0, share_prompt=share,
                                              logits_chunk=cfg.trainer.logits_chunk)
        loss, stats = loss_terms(logprobs, entropy, micro, alg, cfg.kl_in, kl_coef, denominator, loss_norm_len(cfg),
                                 is_cap)
        if first_pass:  # the weights that sampled: compare with the rollout (weighted by tokens: none, no weight)
            diff = (logprobs.detach() - micro["rollout_logprobs"]).abs()
            stats["actor/rollout_logprob_diff"] = masked_mean(diff, micro.response_mask)
        return loss, stats

    with train_mode(model, checkpointing or cfg.model.lora.dropout > 0), compiled.compiled_layers(model):
        acc = optimize(model, optimizer, batch, cfg, seed=seed, micro_loss=micro_loss, prefix="actor",
                       dp=dp or DataParallel())
    out = acc.result()
    out["actor/skipped_steps"] = float(acc.skipped)
    out["actor/lr"] = optimizer.param_groups[0]["lr"]
    out.update(peak_memory(next(model.parameters()).device))
    return out


def update_critic(critic: Any, optimizer: torch.optim.Optimizer, batch: TrainBatch, cfg: Any, seed: int,
                  dp: DataParallel | None = None) -> dict[str, float]:
    """Fit the critic to the returns with the clipped value loss (same epochs and mini-batches as the policy)."""
    alg = cfg.algorithm
    share = cfg.trainer.share_prompt and not uses_gradient_checkpointing(getattr(critic, "backbone", critic))

    def micro_loss(micro: TrainBatch, denominator: float, first_pass: bool) -> tuple[torch.Tensor, dict[str, Stat]]:
        values = critic_values(critic, micro, share)
        vl, clip_frac = value_loss(values, micro["values"], micro["returns"], micro.response_mask,
                                   clip=alg.value_clip, agg=alg.loss_agg, denominator=denominator)
        stats = {"loss/value": vl.detach(), "critic/clip_frac": clip_frac,
                 "critic/value_mean": masked_mean(values.detach(), micro.response_mask)}
        return alg.vf_coef * vl, stats

    acc = optimize(critic, optimizer, batch, cfg, seed=seed + 1, micro_loss=micro_loss, prefix="critic",
                   dp=dp or DataParallel())
    out = acc.result()
    returns, values, mask = batch["returns"], batch["values"], batch.response_mask
    out["critic/value_loss_before"] = float(aggregate(0.5 * (values - returns) ** 2, mask, alg.loss_agg,
                                                       norm_len=loss_norm_len(cfg)))
    var_r = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    var_res = masked_mean((returns - values - masked_mean(returns - values, mask)) ** 2, mask)
    out["critic/explained_var"] = float(1 - var_res / var_r) if float(var_r) > 0 else 0.0
    out["critic/returns_mean"] = float(masked_mean(returns, mask))
    out["critic/lr"] = optimizer.param_groups[0]["lr"]
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
