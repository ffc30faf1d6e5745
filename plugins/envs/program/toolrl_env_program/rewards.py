"""`result_match`: 1.0 when the agent program's return value equals the task's answer."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().replace(",", ""))
        except ValueError:
            return None
    return None


def result_match(trajectories: Sequence[Any], *, result: Sequence[Any], metadata: Sequence[Mapping[str, Any]],
                 key: str = "answer", tolerance: float = 1e-6) -> list[float]:
    """Score what each agent program returned against `metadata[key]`.

    Args:
        trajectories: the batch (one per episode).
        result: the programs' return values (`Trajectory.result`).
        metadata: the tasks' metadata; `metadata[i][key]` is the expected answer.
        key: the metadata field holding the answer.
        tolerance: numbers match when they differ by at most this (relative to the answer's size).

    Returns:
        1.0 for a match, else 0.0 (a program that failed returned None: 0.0). Numbers compare as
        numbers ("1,234" == 1234.0), anything else as stripped strings.

    Example:
        >>> result_match([None, None], result=[42, "x"], metadata=[{"answer": "42"}, {"answer": "y"}])
        [1.0, 0.0]
    """
    scores = []
    for got, meta in zip(result, metadata):
        want = meta.get(key)
        a, b = _number(got), _number(want)
        if a is not None and b is not None:
            ok = math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
        else:
            ok = got is not None and want is not None and str(got).strip() == str(want).strip()
        scores.append(1.0 if ok else 0.0)
    return scores
