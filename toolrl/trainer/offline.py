"""The loop shared by the offline objectives (SFT, DPO): data order, optimizer steps, checkpoints, resume, metrics.

It runs in the calling process (no rollouts, so no Ray): load the policy as the
RL trainer does (`modeling.load_policy`, LoRA included), encode the examples
once with the chat template (`conversations.py`), and per step take
`data.prompts_per_step` examples from a seeded, resumable order
(`TaskSampler`), let the objective accumulate gradients over micro-batches
of `trainer.micro_batch_size`, clip, and step the optimizer and LR schedule.

Checkpoints use the RL trainer's layout (`checkpoint.py`): `policy/` (HF
folder or LoRA adapter), `optimizer.pt`, `scheduler.pt`, `trainer_state.json`
(step, data order, config), `rng.pt`. `trainer.resume=auto` continues exactly:
the same examples in the same order, the same optimizer state, so a run
stopped and resumed ends with the weights of an uninterrupted one (tested).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from toolrl.errors import ToolrlError

logger = logging.getLogger(__name__)


class Objective(Protocol):
    """What an offline objective provides to the loop."""

    name: str  # metric namespace: "sft", "dpo"

    def encode(self, tokenizer: Any, path: str) -> list[Any]:
        """Load `data.train_file` and encode every example (once, before the first step)."""

    def step(self, model: Any, examples: Sequence[Any], indices: Sequence[int]) -> dict[str, float]:
        """Forward/backward the step's examples over micro-batches (gradients accumulate); return `<name>/...` metrics."""


@dataclass
class OfflineResult:
    """What `run_offline` returns (the same attributes as `toolrl.trainer.api.TrainResult`)."""

    run_dir: Path
    last_checkpoint: Path | None
    first_step: int
    history: list[dict[str, float]] = field(default_factory=list)
    placement: dict[str, int] = field(default_factory=dict)


def _seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7_919) % (2**31 - 1)


_MUST_MATCH = ("algorithm.objective", "model.name_or_path", "model.lora.rank", "data.train_file",
               "data.prompts_per_step", "trainer.seed")


def _check_compatible(saved: dict[str, Any], current: dict[str, Any], ckpt: Path) -> None:
    def get(tree: Any, key: str) -> Any:
        for part in key.split("."):
            tree = tree.get(part, {}) if isinstance(tree, dict) else {}
        return tree

    for key in _MUST_MATCH:
        a, b = get(saved, key), get(current, key)
        if a != {} and a != b:
            raise ToolrlError(f"the checkpoint was trained with {key}={a!r} but the config now says {b!r}",
                              where=f"{key} (resuming from {ckpt})",
                              fix=f"set {key}={a!r} to continue that run, or start a new one in a new trainer.output_dir")


def run_offline(cfg: Any, make_objective: Callable[[Any, Any, Any], Objective]) -> OfflineResult:
    """Train `cfg` with the objective `make_objective(cfg, model, model_path)` builds (see module docstring)."""
    from toolrl import models
    from toolrl.config import dump_yaml
    from toolrl.metrics.sinks import MetricLogger, key_figures
    from toolrl.trainer.checkpoint import (
        RNG_FILE,
        STATE_FILE,
        atomic_checkpoint,
        capture_rng,
        checkpoints_dir,
        clean_partial,
        list_checkpoints,
        read_state,
        resolve_resume,
        restore_rng,
        step_name,
    )
    from toolrl.trainer.modeling import (
        count_parameters,
        load_policy,
        load_policy_weights,
        load_tokenizer,
        pick_device,
        save_policy,
    )
    from toolrl.trainer.optim import make_optimizer, make_scheduler
    from toolrl.trainer.sampler import TaskSampler

    tr = cfg.trainer
    if not cfg.data.train_file:
        raise ToolrlError(f"algorithm.objective={cfg.algorithm.objective} needs its examples in data.train_file",
                          where="data.train_file",
                          fix="make them with `toolrl data sft ...` / `toolrl data dpo ...` and set data.train_file")
    run_dir = Path(tr.output_dir)
    resume_from = resolve_resume(tr.resume, run_dir)
    if resume_from is None and tr.resume == "none" and list_checkpoints(run_dir):
        raise ToolrlError(f"{run_dir} already holds checkpoints of an earlier run, and trainer.resume=none would "
                          "start a new run on top of them", where="trainer.output_dir",
                          fix="continue it with trainer.resume=auto, or use a new trainer.output_dir")
    model_path = str(models.resolve(cfg.model.name_or_path))
    sinks = MetricLogger.from_names(tr.metric_sinks, run_dir)  # unknown sink names fail before the model loads
    run_dir.mkdir(parents=True, exist_ok=True)
    clean_partial(run_dir)
    (run_dir / "config.yaml").write_text(dump_yaml(cfg), encoding="utf-8")

    torch.manual_seed(tr.seed)  # adapter init, as the RL policy worker
    device = pick_device(cfg.model.device)
    tokenizer = load_tokenizer(model_path)
    model = load_policy(cfg, model_path, device)
    model.eval()  # no dropout: the loss is a deterministic function of the weights (LoRA dropout: train mode below)
    objective = make_objective(cfg, model, model_path)
    examples = objective.encode(tokenizer, cfg.data.train_file)
    optimizer = make_optimizer(model.parameters(), tr.lr, tr.weight_decay)
    scheduler = make_scheduler(optimizer, warmup=tr.warmup_steps, total=tr.total_steps, schedule=tr.lr_schedule)
    sampler = TaskSampler(len(examples), cfg.data.prompts_per_step, cfg.data.shuffle, tr.seed)
    start = 1
    if resume_from is not None:
        state = read_state(resume_from)
        _check_compatible(state.get("config", {}), cfg.model_dump(mode="json"), resume_from)
        load_policy_weights(model, resume_from / "policy")
        optimizer.load_state_dict(torch.load(resume_from / "optimizer.pt", weights_only=False))
        scheduler.load_state_dict(torch.load(resume_from / "scheduler.pt", weights_only=False))
        sampler.load_state_dict(state["sampler"])
        if (resume_from / RNG_FILE).exists():
            restore_rng(torch.load(resume_from / RNG_FILE, weights_only=False))
        start = int(state["step"]) + 1
        logger.info("resumed from %s (step %d)", resume_from, state["step"])
    total, trainable = count_parameters(model)
    logger.info("toolrl train (%s): %s (%s params, %s trainable) on %s, %d examples, %d per step, steps %d..%d -> %s",
                objective.name, cfg.model.name_or_path, f"{total:,}", f"{trainable:,}", device, len(examples),
                cfg.data.prompts_per_step, start, tr.total_steps, run_dir)

    def save(step: int) -> Path:
        from toolrl import __version__

        with atomic_checkpoint(run_dir, step, keep=tr.keep_checkpoints) as tmp:
            save_policy(model, tokenizer, tmp, base_path=model_path, save_merged=cfg.model.lora.save_merged)
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            state = {"step": step, "sampler": sampler.state_dict(), "seed": tr.seed, "model_path": model_path,
                     "objective": objective.name, "toolrl_version": __version__, "config": cfg.model_dump(mode="json")}
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")
            torch.save(capture_rng(), tmp / RNG_FILE)
        return checkpoints_dir(run_dir) / step_name(step)

    params = [p for p in model.parameters() if p.requires_grad]
    result = OfflineResult(run_dir, None, start)
    sinks.begin(tr.total_steps, start if resume_from else 0)  # keeps the rows of the steps before `start`
    try:
        for step in range(start, tr.total_steps + 1):
            t0 = time.perf_counter()
            torch.manual_seed(_seed(tr.seed, step))
            indices = sampler.next_indices()
            optimizer.zero_grad(set_to_none=True)
            if cfg.model.lora.dropout > 0 or cfg.model.gradient_checkpointing:
                model.train()
            try:
                metrics = objective.step(model, examples, indices)
            finally:
                model.eval()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, tr.max_grad_norm))
            if math.isfinite(grad_norm):
                optimizer.step()
            else:
                logger.warning("non-finite gradient norm (%s): optimizer step skipped", grad_norm)
            metrics[f"{objective.name}/lr"] = optimizer.param_groups[0]["lr"]
            scheduler.step()
            metrics[f"{objective.name}/grad_norm"] = grad_norm
            metrics["timing/step"] = time.perf_counter() - t0
            if (tr.save_freq and step % tr.save_freq == 0) or (step == tr.total_steps and tr.save_last):
                result.last_checkpoint = save(step)
            sinks.log(step, metrics)
            logger.info("step %d/%d  %s", step, tr.total_steps, key_figures(metrics))
            result.history.append(metrics)
    finally:
        sinks.close()
    return result
