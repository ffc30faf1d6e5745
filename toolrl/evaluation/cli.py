"""`toolrl eval` and the before/after table.

    toolrl eval --config run.yaml --model smollm2-135m-instruct --tasks eval.jsonl --n 4 --out base.json --label base
    toolrl eval --config run.yaml --model runs/demo/checkpoints/latest --tasks eval.jsonl --n 4 --out trained.json --label trained
    python -m toolrl.evaluation compare base.json trained.json
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolrl.errors import ToolrlError
from toolrl.evaluation.runner import EvalReport, evaluate

# metrics shown in the tables, in order (pass@k rows are added for every k present)
HEADLINE = ("eval/accuracy", "eval/reward_mean", "eval/reward_std", "eval/response_length", "eval/num_turns",
            "eval/tool_calls", "eval/tool_errors", "eval/distinct_1", "eval/distinct_2", "eval/entropy_2gram",
            "eval/excluded")


def _rows(metrics: Sequence[dict[str, float]]) -> list[str]:
    keys = set().union(*metrics)
    passk = sorted((k for k in keys if k.startswith("eval/pass@")), key=lambda k: int(k.split("@")[1]))
    rows = [k for k in HEADLINE[:1] if k in keys] + passk + [k for k in HEADLINE[1:] if k in keys]
    rows += sorted(k for k in keys if k.startswith("eval/reward/"))
    rows += sorted(k for k in keys if k.count("/") >= 2 and not k.startswith("eval/reward/")
                   and not k.startswith("eval/finish/"))
    return rows


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def report_table(report: EvalReport) -> Any:
    from rich.table import Table

    t = Table(title=f"{report.label}: {report.tasks_file} (n={report.n}, temperature={report.temperature:g})")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in _rows([report.metrics]):
        t.add_row(k.removeprefix("eval/"), _fmt(report.metrics.get(k)))
    return t


def compare_table(reports: Sequence[EvalReport]) -> Any:
    """One column per report; with two reports, a delta column (second minus first)."""
    from rich.table import Table

    t = Table(title="evaluation: " + " vs ".join(r.label for r in reports))
    t.add_column("metric")
    for r in reports:
        t.add_column(r.label, justify="right")
    if len(reports) == 2:
        t.add_column("delta", justify="right")
    for k in _rows([r.metrics for r in reports]):
        vals = [r.metrics.get(k) for r in reports]
        row = [k.removeprefix("eval/"), *(_fmt(v) for v in vals)]
        if len(reports) == 2:
            a, b = vals
            row.append("-" if a is None or b is None else f"{b - a:+.4g}")
        t.add_row(*row)
    return t


def load_report(path: str | Path) -> EvalReport:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ToolrlError("the results file does not exist", where=str(p),
                          fix="write one with `toolrl eval ... --out FILE`") from None
    except json.JSONDecodeError as exc:
        raise ToolrlError(f"not a JSON results file ({exc.msg})", where=str(p),
                          fix="pass a file written by `toolrl eval --out`") from None
    if not isinstance(data, dict) or "metrics" not in data:
        raise ToolrlError("not a toolrl eval results file (no 'metrics')", where=str(p),
                          fix="pass a file written by `toolrl eval --out`")
    return EvalReport.from_json(data)


def eval_command(cfg: Any, *, model: str, tasks: str, n: int = 1, out: str | None = None,
                 label: str | None = None) -> EvalReport:
    import os

    from rich.console import Console

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see toolrl.trainer.cluster.start_ray (before torch loads)
    report = evaluate(cfg, model, tasks, n=n, label=label)
    console = Console()
    console.print(report_table(report))
    if out:
        p = Path(out)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(report.to_json(), indent=2), encoding="utf-8")
        console.print(f"wrote {p}", highlight=False)
    return report


def compare_command(paths: Sequence[str]) -> list[EvalReport]:
    from rich.console import Console

    if not paths:
        raise ToolrlError("no results files given", fix="python -m toolrl.evaluation compare base.json trained.json")
    reports = [load_report(p) for p in paths]
    Console().print(compare_table(reports))
    return reports
