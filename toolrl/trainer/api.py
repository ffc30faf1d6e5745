"""`toolrl train` and `toolrl.train(config)`: set up a run, loop over steps, evaluate, checkpoint.

    import toolrl
    result = toolrl.train("examples/format/config.yaml", ["trainer.total_steps=5"])
    result.run_dir, result.last_checkpoint, result.history[-1]["reward/mean"]

    # environments / rewards / other plugins registered in Python reach every worker process
    result = toolrl.train(config, plugins=[MyEnvPlugin()])

Everything a user can get wrong (config, task files, reward names and
arguments, metric sinks, the model, the checkpoint to resume) is checked
before Ray or any model starts. The step itself is `toolrl.trainer.step`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolrl.errors import ToolrlError
from toolrl.metrics.sinks import key_figures
from toolrl.trainer.roles import TrainerInfo

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished `train` call returns.

    Attributes:
        run_dir: `trainer.output_dir`: metrics.jsonl/csv, TensorBoard events, checkpoints/, config.yaml, train.log.
        last_checkpoint: the final checkpoint folder (its `policy/` is a normal HF model folder).
        first_step: the first step this call ran (> 1 after a resume).
        history: the metrics of every step this call ran, in order.
        placement: process id of each worker ("policy", "policy/1", ... "reference", "critic"); colocated
            ones share the policy's.
    """

    run_dir: Path
    last_checkpoint: Path | None
    first_step: int
    history: list[dict[str, float]] = field(default_factory=list)
    placement: dict[str, int] = field(default_factory=dict)


def coerce_config(config: Any, overrides: Sequence[str] = ()) -> Any:
    """A Config from a Config, a dict or a YAML path, with dotted overrides applied."""
    from toolrl.config import Config, load_config

    if isinstance(config, Config):
        return load_config(data=config.model_dump(mode="json"), overrides=list(overrides)) if overrides else config
    if isinstance(config, dict):
        return load_config(data=config, overrides=list(overrides))
    if isinstance(config, (str, os.PathLike)):
        return load_config(str(config), list(overrides))
    raise TypeError(f"config must be a toolrl Config, a dict or a YAML path, not {type(config).__name__}")


def train(config: Any, overrides: Sequence[str] = (), plugins: Sequence[object] = ()) -> TrainResult:
    """Train a policy (see the module docstring and docs/training.md).

    `plugins`: plugin objects or modules (with `@hookimpl` methods: environments, rewards, estimators, ...)
    registered here and in every worker process of the run.
    """
    cfg = coerce_config(config, overrides)
    if cfg.algorithm.objective != "rl":  # SFT / DPO: the offline loop (toolrl.trainer.offline)
        import importlib

        from toolrl import runtime

        runtime.register_plugins(list(plugins))
        module = importlib.import_module(f"toolrl.trainer.{cfg.algorithm.objective}")
        return getattr(module, f"train_{cfg.algorithm.objective}")(cfg)
    return Trainer(cfg, plugins).run()


class Trainer:
    """Run-level plumbing around `step.train_step`: set-up, resume, eval, checkpoints, sinks."""

    def __init__(self, cfg: Any, plugins: Sequence[object] = ()):
        self.cfg = cfg
        self.plugins = list(plugins)
        self.run_dir = Path(cfg.trainer.output_dir)

    # -- set-up that fails fast --------------------------------------------------------------------
    def _prepare(self) -> None:
        from toolrl import models, plugins, runtime
        from toolrl.algorithms.advantages import uses_critic
        from toolrl.algorithms.kl import make_kl_controller
        from toolrl.metrics.sinks import MetricLogger
        from toolrl.rewards import prepare_rewards
        from toolrl.trainer.checkpoint import clean_partial, list_checkpoints, resolve_resume
        from toolrl.types import load_tasks

        cfg = self.cfg
        runtime.register_plugins(self.plugins)
        if not cfg.data.train_file:
            raise ToolrlError("no training tasks: data.train_file is not set", where="data.train_file",
                              fix="make a task file (`toolrl data make arith-tool --n 200 --out data/train.jsonl`) "
                                  "and set data.train_file=data/train.jsonl")
        self.tasks = load_tasks(cfg.data.train_file)
        self.eval_tasks = load_tasks(cfg.data.eval_file) if cfg.data.eval_file and cfg.trainer.eval_freq else []
        self.rewards = prepare_rewards(cfg.rewards)
        self.estimator = plugins.registry("advantage_estimators").get(cfg.algorithm.advantage)
        self.needs_critic = uses_critic(self.estimator)
        plugins.registry("policy_losses").entry(cfg.algorithm.policy_loss)  # an unknown loss fails here
        self.evaluators = [(name, plugins.registry("evaluators").get(name)) for name in cfg.trainer.evaluators]
        sink_reg = plugins.registry("metric_sinks")
        for name in cfg.trainer.metric_sinks:
            sink_reg.entry(name)  # unknown names fail here, not after the first step
        self.model_path = str(models.resolve(cfg.model.name_or_path))
        self.resume_from = resolve_resume(cfg.trainer.resume, self.run_dir)
        if self.resume_from is None and cfg.trainer.resume == "none" and list_checkpoints(self.run_dir):
            raise ToolrlError(
                f"{self.run_dir} already holds checkpoints of an earlier run, and trainer.resume=none would start a "
                "new run on top of them", where="trainer.output_dir",
                fix=f"continue that run with trainer.resume=auto, or start over in a new folder "
                    f"(trainer.output_dir={self.run_dir}-2), or delete {self.run_dir}")
        # no KL term, no reference pass (with LoRA it is the base with adapters off: no memory, but a forward)
        self.needs_reference = cfg.algorithm.kl_coef > 0
        self.kl_ctl = make_kl_controller(cfg.algorithm.kl_controller, cfg.algorithm.kl_coef, cfg.algorithm.target_kl,
                                         cfg.algorithm.kl_horizon)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        clean_partial(self.run_dir)
        self.sinks = MetricLogger.from_names(cfg.trainer.metric_sinks, self.run_dir)
        self._log_handler = _file_log(self.run_dir / "train.log")

    # -- the run -----------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        from toolrl import runtime
        from toolrl.config import dump_yaml
        from toolrl.trainer.cluster import start_ray, stop_ray
        from toolrl.trainer.group import start_roles
        from toolrl.trainer.pipeline import make_pipeline
        from toolrl.trainer.sampler import TaskSampler
        from toolrl.trainer.step import StepContext, train_step

        self._prepare()
        cfg = self.cfg
        (self.run_dir / "config.yaml").write_text(dump_yaml(cfg), encoding="utf-8")
        started, roles = False, None
        self.pipeline = None
        result = TrainResult(self.run_dir, None, 1)
        try:
            started = start_ray(cfg)
            roles = start_roles(cfg, self.model_path, needs_reference=self.needs_reference,
                                needs_critic=self.needs_critic, plugins=self.plugins)
            result.placement = dict(roles.pids)
            info = roles.trainer.info()
            sampler = TaskSampler(len(self.tasks), cfg.data.prompts_per_step, cfg.data.shuffle, cfg.trainer.seed)
            ctx = StepContext(cfg=cfg, tasks=self.tasks, sampler=sampler, rewards=self.rewards,
                              estimator=self.estimator, kl_ctl=self.kl_ctl, trainer=roles.trainer,
                              reference=roles.reference, critic=roles.critic, engines=roles.engines,
                              pad_token_id=info.pad_token_id)
            self.ctx, self.sampler = ctx, sampler
            start = self._resume() if self.resume_from else 1
            result.first_step = start
            self._announce(info, start)
            total = cfg.trainer.total_steps
            self.sinks.begin(total, start if self.resume_from else 0)
            if start > total:
                logger.warning("the checkpoint is at step %d and trainer.total_steps=%d: nothing to do "
                               "(raise trainer.total_steps to train further)", start - 1, total)
            if self.eval_tasks and start == 1:
                self.sinks.log(0, self._evaluate(0))
            last_saved = start - 1 if self.resume_from else 0
            # async_rollouts.max_staleness > 0: batches sampled ahead in a thread (toolrl.trainer.pipeline)
            self.pipeline = pipeline = make_pipeline(ctx, start, total)
            for step in range(start, total + 1):
                self._progress(step, "running")
                metrics = train_step(step, ctx, pipeline)
                evaluate = bool(self.eval_tasks) and (step % cfg.trainer.eval_freq == 0 or step == total)
                save = (bool(cfg.trainer.save_freq and step % cfg.trainer.save_freq == 0)
                        or (step == total and cfg.trainer.save_last))
                # the engines and the sampler are the rollout thread's: it holds between batches meanwhile
                with pipeline.paused() if pipeline is not None and (evaluate or save) else nullcontext():
                    if evaluate:
                        metrics.update(self._evaluate(step))
                    if save:
                        t0 = time.perf_counter()
                        result.last_checkpoint = self._save(step)
                        last_saved = step
                        metrics["timing/checkpoint"] = time.perf_counter() - t0
                self.sinks.log(step, metrics)
                logger.info("step %d/%d  %s", step, total, key_figures(metrics))
                if result.last_checkpoint is not None and last_saved == step:
                    logger.info("checkpoint %s", result.last_checkpoint)
                result.history.append(metrics)
                self._progress(step, "done")
            if result.last_checkpoint is None and last_saved:
                from toolrl.trainer.checkpoint import latest_checkpoint

                result.last_checkpoint = latest_checkpoint(self.run_dir)
            return result
        finally:
            if self.pipeline is not None:
                self.pipeline.close()
            self.sinks.close()
            if roles is not None:
                roles.close()
            runtime.close()
            stop_ray(started)
            _close_file_log(self._log_handler)

    # -- resume ------------------------------------------------------------------------------------
    def _resume(self) -> int:
        from toolrl.trainer.checkpoint import read_state, restore_run_rng

        ckpt, ctx = self.resume_from, self.ctx
        state = read_state(ckpt)
        _check_compatible(state.get("config", {}), self.cfg.model_dump(mode="json"), ckpt)
        loading = [ctx.trainer.load(ckpt)]
        if ctx.critic is not None:
            loading.append(ctx.critic.load(ckpt))
        for pending in loading:
            pending.get()
        ctx.version = int(state.get("weight_version", state["step"]))
        ctx.engines.sync_weights(ctx.trainer.weights(ctx.version))
        self.sampler.load_state_dict(state["sampler"])
        self.kl_ctl.load_state_dict(state["kl_controller"])
        restore_run_rng(ckpt)
        logger.info("resumed from %s (step %d, weight version %d)", ckpt, state["step"], ctx.version)
        return int(state["step"]) + 1

    # -- checkpoints -------------------------------------------------------------------------------
    def _save(self, step: int) -> Path:
        from toolrl import __version__
        from toolrl.trainer.checkpoint import atomic_checkpoint, checkpoints_dir, step_name, write_run_state

        cfg, ctx = self.cfg, self.ctx
        with atomic_checkpoint(self.run_dir, step, keep=cfg.trainer.keep_checkpoints) as tmp:
            saving = [ctx.trainer.save(tmp, cfg.model.lora.save_merged)]
            if ctx.critic is not None:
                saving.append(ctx.critic.save(tmp))
            for pending in saving:
                pending.get()
            # asynchronous mode: the sampler as it was after this step's batch (batches sampled ahead are dropped
            # and sampled again after a resume)
            sampler = self.pipeline.sampler_state(step) if self.pipeline is not None else self.sampler.state_dict()
            write_run_state(tmp, {
                "step": step, "weight_version": ctx.version, "sampler": sampler,
                "kl_controller": self.kl_ctl.state_dict(), "seed": cfg.trainer.seed, "model_path": self.model_path,
                "toolrl_version": __version__, "config": cfg.model_dump(mode="json"),
            })
        return checkpoints_dir(self.run_dir) / step_name(step)

    # -- evaluation during training ----------------------------------------------------------------
    def _evaluate(self, step: int) -> dict[str, float]:
        from toolrl.metrics.evaluation import eval_metrics, eval_temperature, run_evaluators
        from toolrl.rewards import compute_rewards_sync
        from toolrl.trainer.roles import RolloutJob
        from toolrl.trainer.step import step_seed

        cfg = self.cfg
        t0 = time.perf_counter()
        n = cfg.trainer.eval_n
        trajs = self.ctx.engines.rollout(RolloutJob(tuple(self.eval_tasks), n, step_seed(cfg.trainer.seed + 1, step),
                                                    eval_temperature(cfg, n)))
        results, _ = compute_rewards_sync(trajs, self.eval_tasks, self.rewards)
        m = eval_metrics(trajs, results, n, cfg.trainer.accuracy_reward, cfg.trainer.success_threshold)
        m.update(run_evaluators(self.evaluators, trajs, self.eval_tasks, results))
        m["timing/eval"] = time.perf_counter() - t0
        return m

    # -- reporting ---------------------------------------------------------------------------------
    def _progress(self, step: int, state: str) -> None:
        """`progress.json`: the step in flight (for monitoring, and for tests that interrupt a run)."""
        p = self.run_dir / "progress.json"
        tmp = p.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"step": step, "state": state, "time": time.time(), "pid": os.getpid()}))
        tmp.replace(p)

    def _announce(self, info: TrainerInfo, start: int) -> None:
        from rich.console import Console

        cfg = self.cfg
        ref = ("base with adapters disabled (LoRA)" if cfg.model.lora.rank else
               ("in the policy actor" if cfg.ray.colocate else "own actor")) if self.needs_reference else "none"
        critic = ("in the policy actor" if cfg.ray.colocate else "own actor") if self.needs_critic else "none"
        ranks = f"{info.world_size} trainer ranks" if info.world_size > 1 else "1 trainer rank"
        text = (
            f"toolrl train: {cfg.model.name_or_path} ({info.total_params:,} params, "
            f"{info.trainable_params:,} trainable) on {info.device}, {ranks}, rollout backend {cfg.rollout.backend} "
            f"({getattr(cfg.rollout, 'placement', 'colocated')}), {info.torch_threads} torch threads\n"
            f"  {cfg.algorithm.advantage}: batch {cfg.batch_size} = {cfg.data.prompts_per_step} prompts x "
            f"{cfg.rollout.n} samples, reference: {ref}, critic: {critic}\n"
            f"  steps {start}..{cfg.trainer.total_steps} -> {self.run_dir}"
        )
        staleness = cfg.trainer.async_rollouts.max_staleness
        if staleness:
            text += f"\n  asynchronous rollouts: batches sampled up to {staleness} update(s) behind the trainer"
        if "console" in cfg.trainer.metric_sinks:
            Console().print(text, highlight=False)
        logger.info("%s", text)


_MUST_MATCH = ("model.name_or_path", "model.lora.rank", "model.lora.target_modules", "algorithm.advantage",
               "data.train_file", "data.prompts_per_step", "trainer.seed")


def _check_compatible(saved: dict[str, Any], current: dict[str, Any], ckpt: Path) -> None:
    def get(tree: dict[str, Any], key: str) -> Any:
        for part in key.split("."):
            tree = tree.get(part, {}) if isinstance(tree, dict) else {}
        return tree

    for key in _MUST_MATCH:
        a, b = get(saved, key), get(current, key)
        if a != {} and a != b:
            raise ToolrlError(
                f"the checkpoint was trained with {key}={a!r} but the config now says {b!r}",
                where=f"{key} (resuming from {ckpt})",
                fix=f"set {key}={a!r} to continue that run, or start a new one with trainer.resume=none and a new "
                    "trainer.output_dir",
            )


def _file_log(path: Path) -> logging.Handler:
    """Also write log records to the run directory: toolrl's from INFO up (the run's header, a line per step,
    checkpoints), other libraries' from WARNING up. Under the CLI the root logger passes INFO and only the
    console handler is held to the level chosen with -v; a Python caller's logging set-up decides for itself."""
    h = logging.FileHandler(path, encoding="utf-8")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    h.setLevel(logging.INFO)
    h.addFilter(lambda r: r.name.startswith("toolrl") or r.levelno >= logging.WARNING)
    logging.getLogger().addHandler(h)
    return h


def _close_file_log(h: logging.Handler) -> None:
    logging.getLogger().removeHandler(h)
    h.close()
