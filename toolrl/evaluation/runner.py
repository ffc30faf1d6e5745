"""Evaluate a model (checkpoint, HF folder or registry name) on a task file, in this process.

Prompts are rendered and episodes run by exactly the code that training uses
(`toolrl.trainer.rollout.run_rollouts` -> the agent loop -> `render_prompt`),
so a model is scored on the prompt it was trained with.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolrl.errors import ToolrlError
from toolrl.trainer.modeling import load_eval_model, resolve_model

__all__ = ["EvalReport", "evaluate", "load_eval_model", "resolve_model"]

logger = logging.getLogger(__name__)


@dataclass
class EvalReport:
    """One evaluation: what was evaluated, the metrics, and per-task detail."""

    label: str
    model: str
    tasks_file: str
    n: int
    temperature: float
    metrics: dict[str, float]
    per_task: list[dict[str, Any]] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalReport:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def evaluate(cfg: Any, model: str, tasks: str, n: int = 1, label: str | None = None) -> EvalReport:
    """Sample `n` episodes per task from `model`, score them with `cfg.rewards`, return the report."""
    from toolrl import plugins, runtime
    from toolrl.metrics.evaluation import correctness, eval_metrics, eval_temperature, run_evaluators
    from toolrl.rewards import compute_rewards_sync, prepare_rewards
    from toolrl.rollout.base import BackendSettings
    from toolrl.trainer.modeling import load_tokenizer
    from toolrl.trainer.rollout import run_rollouts
    from toolrl.types import load_tasks

    if n < 1:
        raise ToolrlError(f"--n must be at least 1, got {n}", where="--n", fix="pass --n 1 (or more for pass@k)")
    if not cfg.rewards:
        raise ToolrlError("evaluation needs rewards to score the samples, and the config has none", where="rewards",
                          fix="pass the training config: toolrl eval --config run.yaml --model ... --tasks ...")
    task_list = load_tasks(tasks)
    prepared = prepare_rewards(cfg.rewards)
    evaluators = [(name, plugins.registry("evaluators").get(name)) for name in cfg.trainer.evaluators]
    path = resolve_model(model)
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(path)
    module = load_eval_model(Path(path), cfg.model.dtype, cfg.model.device)
    factory = plugins.registry("rollout_backends").get(cfg.rollout.backend)
    backend = factory(BackendSettings(
        model_path=str(path), dtype=cfg.model.dtype, device=cfg.model.device, max_batch_size=cfg.rollout.max_batch_size,
        module=module, tokenizer=tokenizer, seed=cfg.trainer.seed, extra=dict(cfg.rollout.backend_args),
    ))
    temperature = eval_temperature(cfg, n)
    runtime.current(cfg.envs)  # the process's event loop and shared resources (sandbox pool ...), closed below
    try:
        trajs = run_rollouts(backend, tokenizer, task_list, n, cfg, seed=cfg.trainer.seed, temperature=temperature)
        results, _ = compute_rewards_sync(trajs, task_list, prepared)
    finally:
        try:
            runtime.close()
        finally:
            backend.close()
    metrics = eval_metrics(trajs, results, n, cfg.trainer.accuracy_reward, cfg.trainer.success_threshold)
    metrics.update(run_evaluators(evaluators, trajs, task_list, results))
    flags = correctness(trajs, results, cfg.trainer.accuracy_reward, cfg.trainer.success_threshold)
    per_task = []
    by_task: dict[str, list[Any]] = {}
    for t, r in zip(trajs, results):
        by_task.setdefault(t.task_id, []).append((t, r))
    for tid, pairs in by_task.items():
        per_task.append({
            "task_id": tid,
            "rewards": [r.total for _, r in pairs],
            "correct": flags.get(tid, []),
            "completions": [t.completion_text for t, _ in pairs],
        })
    return EvalReport(label=label or str(model), model=str(path), tasks_file=str(tasks), n=n, temperature=temperature,
                      metrics=metrics, per_task=per_task, seconds=time.perf_counter() - t0)
