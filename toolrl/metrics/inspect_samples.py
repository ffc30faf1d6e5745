"""`toolrl inspect RUN [--step N] [--worst|--best]`: a step's samples in the terminal, with rich.

Reads `<RUN>/samples/step_NNNNNN.jsonl` (toolrl.metrics.samples) and shows a
summary of the step, then each sample: its reward and every component, the
advantage, the weight version, and the conversation (prompt, assistant turns,
tool calls, tool results).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from toolrl.metrics.samples import read_samples

Order = Literal["batch", "worst", "best"]
_ROLE_STYLE = {"system": "dim", "user": "cyan", "assistant": "green", "tool": "yellow"}


def select(rows: Sequence[dict[str, Any]], order: Order = "batch", n: int | None = None,
           task: str | None = None) -> list[dict[str, Any]]:
    """The samples to show: filtered by task id, ordered by reward (excluded samples last), the first n."""
    chosen = [r for r in rows if task is None or r["task_id"] == task]
    if order != "batch":
        best = order == "best"
        included = [r for r in chosen if r["reward"] is not None]
        included.sort(key=lambda r: (r["reward"], r["advantage"] or 0.0), reverse=best)
        chosen = included + [r for r in chosen if r["reward"] is None]
    return chosen[:n] if n is not None else chosen


def _clip(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    return text[:limit] + f" … [{len(text) - limit} more characters; --full shows all]"


def _message_text(m: dict[str, Any], limit: int | None) -> str:
    content = m.get("content")
    if isinstance(content, list):  # content parts
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    text = _clip(str(content or ""), limit)
    for call in m.get("tool_calls") or []:
        fn = call.get("function", call)
        args = fn.get("arguments")
        text += f"\n→ tool call {fn.get('name')}({_clip(json.dumps(args, ensure_ascii=False) if not isinstance(args, str) else args, limit)})"
    return text


def render(run_dir: str | Path, step: int | None = None, order: Order = "batch", n: int | None = 5,
           task: str | None = None, full: bool = False, show_prompt: bool = False, console: Any = None) -> None:
    """Print one step's samples (see the module docstring)."""
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    step, rows = read_samples(run_dir, step)
    limit = None if full else 600
    included = [r["reward"] for r in rows if r["reward"] is not None]
    summary = Table.grid(padding=(0, 2))
    summary.add_row("run", str(run_dir), "step", str(step), "samples", str(len(rows)))
    summary.add_row("mean reward", f"{sum(included) / len(included):.3f}" if included else "-",
                    "excluded", str(len(rows) - len(included)),
                    "weight versions", ", ".join(str(v) for v in sorted({r["weight_version"] for r in rows})))
    console.print(Panel(summary, title="toolrl inspect", expand=False))
    shown = select(rows, order, n, task)
    for r in shown:
        head = Table.grid(padding=(0, 2))
        reward = "[red]excluded[/]" + (f" ({r['excluded_reason']})" if r["excluded_reason"] else "") \
            if r["reward"] is None else f"[bold]{r['reward']:.3f}[/]"
        adv = "-" if r["advantage"] is None else f"{r['advantage']:+.3f}"
        head.add_row("reward", reward, "advantage", adv, "finish", r["finish_reason"], "turns", str(r["num_turns"]),
                     "weights", f"v{r['weight_version']}")
        comps = Table("component", "value", box=None, padding=(0, 1))
        for k, v in r["components"].items():
            comps.add_row(k, "-" if v is None else f"{v:.4g}")
        parts: list[Any] = [head, comps]
        if r["tool_calls"]:
            calls = ", ".join(f"{c['name']}({json.dumps(c['arguments'], ensure_ascii=False)})" for c in r["tool_calls"])
            errors = f" — {r['tool_errors']} failed" if r["tool_errors"] else ""
            bad = f", {r['malformed_tool_calls']} malformed" if r["malformed_tool_calls"] else ""
            parts.append(Text(f"tool calls: {_clip(calls, limit)}{errors}{bad}", style="yellow"))
        if r.get("error"):
            parts.append(Text(f"error: {r['error']}", style="red"))
        start = 0 if show_prompt else max(0, r["num_prompt_messages"] - 1)  # the last prompt message is the question
        for m in r["messages"][start:]:
            role = m.get("role", "?")
            name = f" {m['name']}" if role == "tool" and m.get("name") else ""
            label = Text(f"{role}{name}: ", style=f"bold {_ROLE_STYLE.get(role, '')}")
            parts.append(label + Text(_message_text(m, limit), style=_ROLE_STYLE.get(role, "")))
        title = f"{r['task_id']}#{r['sample_index']} (group {r['group']})"
        console.print(Panel(Group(*parts), title=title, title_align="left"))
    if not shown:
        console.print(f"no samples match (task {task!r})" if task else "no samples")


def inspect_command(run_dir: str, step: int | None, worst: bool, best: bool, n: int | None, task: str | None,
                    full: bool, show_prompt: bool) -> None:
    """The `toolrl inspect` command."""
    from toolrl.errors import ToolrlError

    if worst and best:
        raise ToolrlError("--worst and --best exclude each other", where="toolrl inspect", fix="pass one of them")
    render(run_dir, step, "worst" if worst else "best" if best else "batch", n, task, full, show_prompt)
