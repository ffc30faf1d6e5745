"""The math rewards: `gsm8k_exact` and `math_equiv`.

Both read the model's final answer (the last assistant message, toolrl's
`completions` keyword) and the ground truth from `task.metadata["answer"]`
(another key with `answer_key`). A ground truth written as a GSM8K solution
(`... #### 72`) is reduced to what follows `####`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from toolrl.errors import RewardError

from toolrl_rewards_math.equivalence import _WORD, _strip_latex_words, answers_equal, normalize_answer, numbers_equal
from toolrl_rewards_math.extract import (
    METHODS,
    extract_answer,
    extract_hash,
    extract_hash_number,
    extract_last_number,
)


def gsm8k_exact(
    trajectories: Sequence[Any],
    *,
    completions: Sequence[str],
    metadata: Sequence[Mapping[str, Any]],
    tasks: Sequence[Any],
    method: str = "strict",
    score: float = 1.0,
    format_score: float = 0.0,
    answer_key: str = "answer",
) -> list[float]:
    """GSM8K exact match: the number after `####` must equal the ground truth.

    The reward of the GSM8K GRPO recipe: the prompt asks the model to "output the
    final answer after `####`", and only the number written there counts. Numbers
    are compared by value after removing `$` signs and thousands separators
    (`1,000` = `1000`, `72.0` = `72`); nothing symbolic.

    Args:
        trajectories: the batch (toolrl passes it positionally).
        completions: the final assistant message of each trajectory (passed by toolrl).
        metadata: each task's metadata; the ground truth is `metadata[answer_key]` (passed by toolrl).
        tasks: each trajectory's task, used to name it in errors (passed by toolrl).
        method: `"strict"`: only a number right after `####` counts (this also
            checks the format); `"flexible"`: the last number anywhere in the text.
        score: reward for a correct answer.
        format_score: reward for an answer that was found but is wrong.
        answer_key: the metadata key holding the ground truth.

    Returns:
        One float per trajectory: `score`, `format_score`, or 0.0 when no answer was found.

    Example:
        ```yaml
        rewards:
          - {name: gsm8k_exact, weight: 1.0, args: {method: strict, format_score: 0.1}}
        ```
        A completion `"... 3 + 4 = 7\\n#### 7"` for a task with `metadata: {answer: "7"}` scores 1.0.
    """
    if method not in ("strict", "flexible"):
        raise RewardError(f"gsm8k_exact: method must be 'strict' or 'flexible', got {method!r}",
                          where="rewards[].args.method", fix="set args.method to strict or flexible")
    out: list[float] = []
    for text, meta, task in zip(completions, metadata, tasks):
        gold = _ground_truth(meta, task, answer_key, "gsm8k_exact")
        if method == "strict":
            pred = extract_hash_number(text or "")
        else:
            pred = extract_last_number(text or "")
        if pred is None:
            out.append(0.0)
        else:
            out.append(float(score) if numbers_equal(pred, gold) else float(format_score))
    return out


def math_equiv(
    trajectories: Sequence[Any],
    *,
    completions: Sequence[str],
    metadata: Sequence[Mapping[str, Any]],
    tasks: Sequence[Any],
    extract: Sequence[str] = METHODS,
    score: float = 1.0,
    format_score: float = 0.0,
    answer_key: str = "answer",
    timeout: int = 5,
) -> list[float]:
    """Symbolic equivalence of the final answer and the ground truth (math-verify / SymPy).

    The answer is taken from the first of `extract` that finds one: an
    `<answer>...</answer>` tag, `\\boxed{...}`, the text after `####`, the last
    number. It is then compared with the ground truth: numbers exactly (fractions,
    decimals, thousands separators, `$` and units stripped: `"$1,000 dollars"` =
    `1000`, `0.75` = `3/4`), otherwise symbolically (`2x+1` = `1+2*x`,
    `\\frac{\\sqrt{2}}{2}` = `sqrt(2)/2`). If the extracted answer still holds prose
    ("the answer is 5"), its last number is used.

    Args:
        trajectories: the batch (toolrl passes it positionally).
        completions: the final assistant message of each trajectory (passed by toolrl).
        metadata: each task's metadata; the ground truth is `metadata[answer_key]` (passed by toolrl).
        tasks: each trajectory's task, used to name it in errors (passed by toolrl).
        extract: extraction methods to try, in order: any of `answer_tag`, `boxed`, `hash`, `last_number`.
        score: reward for an equivalent answer.
        format_score: reward for an answer that was found but is not equivalent.
        answer_key: the metadata key holding the ground truth.
        timeout: seconds allowed per symbolic comparison.

    Returns:
        One float per trajectory: `score`, `format_score`, or 0.0 when no answer was found.

    Example:
        ```yaml
        rewards:
          - {name: math_equiv, weight: 0.6, args: {extract: [boxed, last_number]}}
        ```
        A completion `"... so the answer is \\boxed{\\frac{1}{2}}"` for a task with
        `metadata: {answer: "0.5"}` scores 1.0.
    """
    methods = tuple(extract)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise RewardError(f"math_equiv: unknown extraction method(s) {bad or '(none given)'}",
                          where="rewards[].args.extract", fix=f"use a list of {list(METHODS)}")
    out: list[float] = []
    for text, meta, task in zip(completions, metadata, tasks):
        gold = _ground_truth(meta, task, answer_key, "math_equiv")
        pred = extract_answer(text, methods)
        if pred is not None and _WORD.search(_strip_latex_words(normalize_answer(pred))):
            pred = extract_last_number(pred) or pred
        if pred is None:
            out.append(0.0)
        else:
            out.append(float(score) if answers_equal(pred, gold, timeout=timeout) else float(format_score))
    return out


def _ground_truth(meta: Mapping[str, Any], task: Any, key: str, reward: str) -> str:
    value = meta.get(key) if isinstance(meta, Mapping) else None
    if value is None or str(value).strip() == "":
        raise RewardError(
            f"{reward}: the task has no ground truth in metadata[{key!r}]",
            where=f"task {getattr(task, 'id', '?')!r}",
            fix=f'add "metadata": {{"{key}": "..."}} to the task (or set args.answer_key to the key that holds it)',
        )
    text = str(value)
    if "####" in text:
        text = extract_hash(text) or text
    return text.strip()
