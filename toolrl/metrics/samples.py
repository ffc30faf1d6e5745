"""Each step's trajectories as readable JSONL: `<run_dir>/samples/step_000003.jsonl`.

One line per trajectory, written when `trainer.log_samples` is true (the
default; at most `trainer.log_samples_max` per step, whole prompt groups in
batch order). `toolrl inspect RUN` renders them. A line holds:

    step, task_id, sample_index, group      which prompt and which of its n samples
    weight_version                          trainer updates the sampling weights had seen
    reward                                  the weighted total (null = excluded from the update)
    excluded_reason                         why, when excluded
    components                              every reward component's raw value
    advantage                               mean advantage over the sampled tokens
    finish_reason, num_turns                how the episode ended, and its model turns
    sampled_tokens, prompt_tokens           token counts
    tool_calls                              [{name, arguments}] in call order
    tool_errors, malformed_tool_calls, error
    result                                  what an agent program returned (`env: program`; null otherwise),
                                            as JSON, or its repr when it is not JSON-serialisable
    segments                                an agent program's earlier segments (docs/environments.md,
                                            "Segments"): [{prompt_tokens, sampled_tokens}], [] otherwise
    num_prompt_messages, messages           the whole conversation: prompt, assistant turns, tool results

Example::

    >>> from toolrl.metrics.samples import read_samples
    >>> step, rows = read_samples("runs/demo")                # doctest: +SKIP
    >>> max(rows, key=lambda r: r["reward"] or 0)["messages"][-1]   # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolrl.errors import ToolrlError
from toolrl.types import RewardResult, Trajectory

logger = logging.getLogger(__name__)

SAMPLES_DIR = "samples"
_FILE = re.compile(r"^step_(\d+)\.jsonl$")


def samples_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / SAMPLES_DIR / f"step_{step:06d}.jsonl"


def _float(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _jsonable(value: Any) -> Any:
    """`value` if it is JSON data (a program's result usually is), else its repr."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value


def per_sample_advantages(advantages: Any, mask: Any) -> list[float]:
    """Mean advantage over each row's sampled tokens, from `[B, T]` tensors (0.0 for a row with none)."""
    adv = advantages.float()
    m = mask.float()
    sums = (adv * m).sum(-1)
    counts = m.sum(-1).clamp(min=1.0)
    return [float(x) for x in (sums / counts).tolist()]


def sample_records(step: int, trajectories: Sequence[Trajectory], results: Sequence[RewardResult],
                   advantages: Sequence[float] | None = None, group_ids: Sequence[str] | None = None
                   ) -> list[dict[str, Any]]:
    """One JSON-ready dict per trajectory (see the module docstring for the fields)."""
    n = len(trajectories)
    if len(results) != n or (advantages is not None and len(advantages) != n) or \
            (group_ids is not None and len(group_ids) != n):
        raise ToolrlError(
            f"sample records need one reward, advantage and group id per trajectory: got {n} trajectories, "
            f"{len(results)} rewards, {None if advantages is None else len(advantages)} advantages, "
            f"{None if group_ids is None else len(group_ids)} group ids",
            where="toolrl.metrics.samples.sample_records", fix="pass lists aligned with the trajectories")
    out = []
    for i, (t, r) in enumerate(zip(trajectories, results)):
        out.append({
            "step": step,
            "task_id": t.task_id,
            "sample_index": t.sample_index,
            "group": group_ids[i] if group_ids is not None else t.task_id,
            "weight_version": t.weight_version,
            "reward": _float(r.total),
            "excluded_reason": r.excluded_reason,
            "components": {k: _float(v) for k, v in r.components.items()},
            "advantage": _float(advantages[i]) if advantages is not None else None,
            "finish_reason": t.finish_reason,
            "num_turns": t.num_turns,
            "sampled_tokens": t.num_sampled_tokens,
            "prompt_tokens": len(t.prompt_ids),
            "tool_calls": [{"name": c.name, "arguments": dict(c.arguments)} for c in t.tool_calls],
            "tool_errors": t.tool_errors,
            "malformed_tool_calls": t.malformed_tool_calls,
            "error": t.error,
            "result": _jsonable(t.result),
            "segments": [{"prompt_tokens": len(s.prompt_ids), "sampled_tokens": sum(s.loss_mask)} for s in t.segments],
            "num_prompt_messages": t.num_prompt_messages,
            "messages": [dict(m) for m in t.messages],
        })
    return out


def _cap(records: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The first `limit` records, cut at a group boundary when one group fits (so groups stay whole)."""
    if len(records) <= limit:
        return records
    cut = limit
    while cut > 0 and records[cut]["group"] == records[cut - 1]["group"]:
        cut -= 1
    return records[: cut or limit]


def write_samples(run_dir: str | Path, step: int, trajectories: Sequence[Trajectory],
                  results: Sequence[RewardResult], advantages: Sequence[float] | None = None,
                  group_ids: Sequence[str] | None = None, *, max_samples: int = 64) -> Path:
    """Write (or rewrite, on resume) one step's samples file and return its path."""
    records = _cap(sample_records(step, trajectories, results, advantages, group_ids), max_samples)
    path = samples_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)
    if len(records) < len(trajectories):
        logger.debug("samples: step %d wrote %d of %d trajectories (trainer.log_samples_max)", step, len(records),
                     len(trajectories))
    return path


def logged_steps(run_dir: str | Path) -> list[int]:
    d = Path(run_dir) / SAMPLES_DIR
    if not d.is_dir():
        return []
    return sorted(int(m.group(1)) for p in d.iterdir() if (m := _FILE.match(p.name)))


def read_samples(run_dir: str | Path, step: int | None = None) -> tuple[int, list[dict[str, Any]]]:
    """(step, records) of one logged step; the latest when `step` is None."""
    steps = logged_steps(run_dir)
    if not steps:
        raise ToolrlError(
            f"no samples in {Path(run_dir) / SAMPLES_DIR}",
            where=str(run_dir),
            fix="pass the output_dir of a run trained with trainer.log_samples=true (the default)",
        )
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise ToolrlError(f"step {step} has no samples file", where=str(run_dir),
                          fix=f"use one of the logged steps: {', '.join(map(str, steps))}")
    rows = []
    for line in samples_path(run_dir, step).read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return step, rows


def debug_line(rec: dict[str, Any]) -> str:
    """One line per sample for debug logging: id, reward, components and advantage."""
    comps = " ".join(f"{k}={'-' if v is None else f'{v:.3g}'}" for k, v in rec["components"].items())
    reward = "excluded" if rec["reward"] is None else f"{rec['reward']:.3f}"
    adv = "-" if rec["advantage"] is None else f"{rec['advantage']:+.3f}"
    line = (f"{rec['task_id']}#{rec['sample_index']} reward={reward} [{comps}] advantage={adv} "
            f"finish={rec['finish_reason']} tools={len(rec['tool_calls'])} v{rec['weight_version']}")
    if rec.get("result") is not None:  # an agent program's return value (shortened)
        shown = repr(rec["result"])
        line += f" result={shown if len(shown) <= 80 else shown[:77] + '...'}"
    return line
