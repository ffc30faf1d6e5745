"""Evaluation metrics (`eval/…`): they live in `toolrl.metrics.evaluation`, where the trainer reads them too
(the trainer never imports `toolrl.evaluation`, which builds on the trainer's model loading and rollouts)."""

from toolrl.metrics.evaluation import correctness, eval_metrics, eval_temperature, ks_for, pass_at_k, run_evaluators

__all__ = ["correctness", "eval_metrics", "eval_temperature", "ks_for", "pass_at_k", "run_evaluators"]
