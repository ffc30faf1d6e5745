"""Metrics: sinks (console, JSONL, CSV, TensorBoard), rollout and diversity statistics, plots.

Metric names are namespaced: `reward/…`, `loss/…`, `actor/…`, `critic/…`,
`rollout/…`, `timing/…`, `eval/…`. docs/training.md lists every name.
"""
