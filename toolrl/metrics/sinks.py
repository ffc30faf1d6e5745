"""Metric sinks: where each step's metrics go.

A sink is made by `factory(run_dir: Path)` (registered through
`register_metric_sinks`) and has `log(step, metrics)` and `close()`. It may
also have `begin(total_steps, first_step)`, called once before the first
`log`: `first_step` is the first step that will be logged — 0 for a new run
(step 0 holds the evaluation before training), the step after the checkpoint
for a resumed one. A sink that keeps history drops what it recorded for
`first_step` and later (those steps are about to be recomputed), so a resumed
run's files read like an uninterrupted one and a new run starts clean.

Built-ins: `console` (a rich progress bar with the key figures and one line per
step), `jsonl` (`metrics.jsonl`), `csv` (`metrics.csv`) and `tensorboard`
(event files in the run directory: `tensorboard --logdir runs/`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger(__name__)

JSONL_NAME = "metrics.jsonl"
CSV_NAME = "metrics.csv"


@runtime_checkable
class MetricSink(Protocol):
    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record one step's metrics (names namespaced, values floats)."""
        ...

    def close(self) -> None: ...


def _clean(metrics: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file, in order (an unfinished last line is ignored)."""
    p = Path(path)
    if not p.exists():
        return []
    rows = []
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    return rows


class JsonlSink:
    """One JSON object per step: `{"step": 3, "time": ..., "reward/mean": ...}`."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / JSONL_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: Any = None

    def begin(self, total_steps: int, first_step: int) -> None:
        keep = [r for r in read_jsonl(self.path) if int(r.get("step", 0)) < first_step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for r in keep:
                fh.write(json.dumps(r) + "\n")
        tmp.replace(self.path)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if self._fh is None:
            self._fh = self.path.open("a", encoding="utf-8")
        record = {"step": step, "time": time.time(), **_clean(metrics)}
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class CsvSink:
    """A CSV with one row per step; the header grows when a new metric appears (the file is rewritten)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / CSV_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns: list[str] = []
        self.rows: list[dict[str, Any]] = []

    def begin(self, total_steps: int, first_step: int) -> None:
        if self.path.exists():
            with self.path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                self.columns = list(reader.fieldnames or [])
                self.rows = [r for r in reader if r.get("step") and int(float(r["step"])) < first_step]
        self._rewrite()

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        row = {"step": step, "time": time.time(), **_clean(metrics)}
        self.rows.append(row)
        new = [k for k in row if k not in self.columns]
        if new or not self.path.exists():
            self.columns.extend(new)
            self._rewrite()
            return
        with self.path.open("a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, fieldnames=self.columns).writerow(row)

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=self.columns or ["step"])
            w.writeheader()
            for r in self.rows:
                w.writerow(r)
        tmp.replace(self.path)

    def close(self) -> None:
        return None


class TensorBoardSink:
    """Scalars in TensorBoard event files under the run directory."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._writer: Any = None
        self._failed = False

    def begin(self, total_steps: int, first_step: int) -> None:
        self._open(purge_step=first_step)

    def _open(self, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self._failed = True
            logger.warning("the tensorboard metric sink is off: the 'tensorboard' package is not installed "
                           "(pip install 'toolrl[tensorboard]', or drop 'tensorboard' from trainer.metric_sinks)")
            return
        self._writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_step)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if self._writer is None and not self._failed:
            self._open()
        if self._writer is None:
            return
        for k, v in _clean(metrics).items():
            if math.isfinite(v):
                self._writer.add_scalar(k, v, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# the figures shown on the progress bar and in each step's line, in order
KEY_FIGURES: Sequence[tuple[str, str, str]] = (
    ("reward/mean", "reward", "{:.3f}"),
    ("reward/accuracy", "acc", "{:.2f}"),
    ("actor/kl", "kl", "{:.4f}"),
    ("actor/entropy", "ent", "{:.2f}"),
    ("loss/policy", "pg", "{:+.4f}"),
    ("loss/value", "vf", "{:.4f}"),
    ("rollout/response_length", "len", "{:.0f}"),
    ("rollout/tool_calls", "tools", "{:.2f}"),
    ("eval/accuracy", "eval_acc", "{:.2f}"),
    ("timing/step", "s/step", "{:.1f}"),
)


def _resource_total(metrics: Mapping[str, float], suffix: str) -> float | None:
    vals = [v for k, v in metrics.items() if k.startswith("resources/") and k.endswith(suffix)
            and isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(vals) if vals else None


def key_figures(metrics: Mapping[str, float]) -> str:
    parts = []
    for key, label, fmt in KEY_FIGURES:
        if key in metrics and isinstance(metrics[key], (int, float)) and math.isfinite(metrics[key]):
            parts.append(f"{label} {fmt.format(metrics[key])}")
    # resources summed over the run's processes (resources/<role>/...): memory, CPU, GPU memory peak
    rss, cpu, gpu = (_resource_total(metrics, s) for s in ("/rss_mib", "/cpu_percent", "/gpu_mem_peak_mib"))
    if rss is not None:
        parts.append(f"mem {rss / 1024:.1f}G")
    if cpu is not None:
        parts.append(f"cpu {cpu:.0f}%")
    if gpu is not None:
        parts.append(f"gpu_peak {gpu / 1024:.1f}G")
    return "  ".join(parts)


class ConsoleSink:
    """A rich progress bar (step M/N, elapsed, remaining) with the key figures, and one line per step."""

    def __init__(self, run_dir: Path, console: Any = None):
        from rich.console import Console

        self.console = console or Console()
        self._progress: Any = None
        self._task: Any = None
        self.total = 0

    def begin(self, total_steps: int, first_step: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.total = total_steps
        self._progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("{task.description}"), console=self.console, transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("", total=total_steps, completed=max(first_step - 1, 0))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        figures = key_figures(metrics)
        width = len(str(self.total or step))
        self.console.print(f"step {step:>{width}}/{self.total or '?'}  {figures}", highlight=False)
        if self._progress is not None:
            self._progress.update(self._task, completed=step, description=figures)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class MetricLogger:
    """Fans one step's metrics out to every configured sink."""

    def __init__(self, sinks: Sequence[MetricSink]):
        self.sinks = list(sinks)

    @classmethod
    def from_names(cls, names: Sequence[str], run_dir: Path) -> MetricLogger:
        from toolrl import plugins

        reg = plugins.registry("metric_sinks")
        return cls([reg.get(name)(Path(run_dir)) for name in names])

    def begin(self, total_steps: int, first_step: int) -> None:
        for s in self.sinks:
            begin = getattr(s, "begin", None)
            if begin is not None:
                begin(total_steps, first_step)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for s in self.sinks:
            s.log(step, metrics)

    def close(self) -> None:
        for s in self.sinks:
            try:
                s.close()
            except Exception:  # one broken sink must not hide the others' data
                logger.exception("closing metric sink %r failed", s)
