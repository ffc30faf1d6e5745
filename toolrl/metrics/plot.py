"""`toolrl plot RUN_DIR`: PNG curves of a run (reward, KL, length, accuracy, losses, resources).

Reads `RUN_DIR/metrics.jsonl` (written by the `jsonl` sink), falling back to
`metrics.csv`, and draws with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from toolrl.errors import ToolrlError
from toolrl.metrics.sinks import CSV_NAME, JSONL_NAME, read_jsonl

_NOT_COMPONENTS = {"mean", "std", "min", "max", "total", "excluded", "infra_error", "accuracy", "zero_std_groups",
                   "kl_penalty"}


def _reward_components(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 2 and parts[0] == "reward" and parts[1] not in _NOT_COMPONENTS


# figure file -> (title, y label, predicate or list of metric keys)
FIGURES: dict[str, tuple[str, str, Sequence[str] | Callable[[str], bool]]] = {
    "reward": ("Reward", "reward", lambda k: k == "reward/mean" or _reward_components(k)),
    "accuracy": ("Accuracy", "fraction",
                 lambda k: k in ("reward/accuracy", "eval/accuracy") or k.startswith("eval/pass@")),
    "kl": ("KL to the reference", "KL", ["actor/kl", "loss/kl"]),
    "length": ("Response length", "tokens", ["rollout/response_length", "rollout/total_length"]),
    "loss": ("Losses", "loss", ["loss/policy", "loss/value", "loss/total"]),
    "entropy": ("Policy entropy", "nats/token", ["actor/entropy"]),
    "throughput": ("Throughput", "tokens/s", lambda k: k.startswith("timing/") and k.endswith("_tokens_per_s")),
    "memory": ("Memory per process", "MiB",
               lambda k: k.startswith("resources/") and k.endswith(("rss_mib", "_mem_allocated_mib",
                                                                     "_mem_reserved_mib", "_mem_peak_mib"))),
    "utilisation": ("CPU and GPU use per process", "percent (100 = one core / one GPU)",
                    lambda k: k.startswith("resources/") and k.endswith(("cpu_percent", "gpu_utilization"))),
}


def load_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """A run's per-step records from metrics.jsonl (or metrics.csv)."""
    d = Path(run_dir)
    rows = read_jsonl(d / JSONL_NAME)
    if not rows and (d / CSV_NAME).exists():
        with (d / CSV_NAME).open(newline="", encoding="utf-8") as fh:
            rows = [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(fh)]
    if not rows:
        raise ToolrlError(
            f"no metrics found in {d} (looked for {JSONL_NAME} and {CSV_NAME})",
            where=str(d),
            fix="pass the run directory of a training run (trainer.output_dir) that logged at least one step "
                "with the jsonl or csv metric sink",
        )
    return rows


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(float(r["step"]))
            ys.append(float(v))
    return xs, ys


def figures(run_dir: str | Path) -> dict[str, Any]:
    """One matplotlib Figure per entry of FIGURES that has data (the caller closes them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = load_metrics(run_dir)
    keys = sorted({k for r in rows for k in r if k not in ("step", "time")})
    out: dict[str, Any] = {}
    for name, (title, ylabel, select) in FIGURES.items():
        chosen = [k for k in keys if select(k)] if callable(select) else [k for k in select if k in keys]
        series = [(k, *_series(rows, k)) for k in chosen]
        series = [s for s in series if s[1]]
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for key, xs, ys in series:
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=key)
            if key == "reward/mean":
                sx, sy = _series(rows, "reward/std")
                if sx == xs:
                    ax.fill_between(xs, [y - s for y, s in zip(ys, sy)], [y + s for y, s in zip(ys, sy)], alpha=0.15)
        ax.set_title(f"{title} — {Path(run_dir).name}")
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        out[name] = fig
    return out


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Write one PNG per figure with data; return their paths."""
    import matplotlib.pyplot as plt

    figs = figures(run_dir)
    out_dir = Path(out) if out else Path(run_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, fig in figs.items():
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def plot_command(run_dir: str, out: str | None = None) -> list[Path]:
    """The `toolrl plot` command: write the PNGs and list them."""
    from rich.console import Console

    paths = plot_run(run_dir, out)
    console = Console()
    for p in paths:
        console.print(f"wrote {p}", highlight=False)
    return paths
