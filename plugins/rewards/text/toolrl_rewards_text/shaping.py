"""Shaping rewards on the text itself: reasoning connectors and a length penalty.

Both follow the student project in the verl-for-education article: "+0.3 for each
connector such as 'because … therefore'" and "-0.1 per 10 characters over 200".
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from toolrl.errors import RewardError

DEFAULT_CONNECTORS: tuple[str, ...] = (
    "because … therefore",
    "since … so",
    "first … then",
    "if … then",
    "因为…所以",
    "由…得",
)
"""Connector patterns: parts separated by `…` (or `...`) must appear in this order."""

_SPLIT = re.compile(r"\s*(?:…|\.\.\.)\s*")


def _texts(trajectories: Sequence[Any], completions: Sequence[str], text: str, reward: str) -> list[str]:
    if text == "final":
        return [c or "" for c in completions]
    if text == "all":
        return [t.completion_text for t in trajectories]
    raise RewardError(f"{reward}: text must be 'final' or 'all', got {text!r}", where="rewards[].args.text",
                      fix="use final (the last assistant message) or all (every assistant message)")


def _pattern(phrase: str) -> re.Pattern[str]:
    parts = [p for p in _SPLIT.split(phrase.strip()) if p]
    if not parts:
        raise RewardError(f"reasoning_connectors: empty phrase {phrase!r}", where="rewards[].args.phrases",
                          fix="give phrases such as 'because … therefore'")

    def word(p: str) -> str:
        body = re.escape(p)
        # whole words for Latin script; CJK has no word boundaries
        return rf"\b{body}\b" if p.isascii() and p[0].isalnum() and p[-1].isalnum() else body

    return re.compile(r".*?".join(word(p) for p in parts), re.I | re.S)


def reasoning_connectors(
    trajectories: Sequence[Any],
    *,
    completions: Sequence[str],
    phrases: Sequence[str] = DEFAULT_CONNECTORS,
    per_phrase: float = 0.3,
    max_reward: float | None = None,
    text: str = "all",
) -> list[float]:
    """Reward reasoning written out with connectors ("because … therefore").

    Each phrase that occurs adds `per_phrase` (a phrase counts once however often
    it occurs). A phrase with several parts, separated by `…` or `...`, matches
    when the parts occur in that order (`"because … therefore"` matches "because
    x > 3, therefore ..."). Latin-script parts match whole words, case-insensitively.

    Args:
        trajectories: the batch (toolrl passes it positionally).
        completions: the final assistant message of each trajectory (passed by toolrl).
        phrases: the connector patterns (default `DEFAULT_CONNECTORS`, English and Chinese).
        per_phrase: reward per phrase found.
        max_reward: cap on the total (None: no cap).
        text: `"all"` scores every assistant message of the episode, `"final"` only the last one.

    Returns:
        One float per trajectory: `per_phrase * (phrases found)`, capped at `max_reward`.

    Example:
        ```yaml
        rewards:
          - {name: reasoning_connectors, weight: 0.3, args: {phrases: ["because … therefore", "因为…所以"]}}
        ```
        "Because 3 > 2, therefore 3 wins" scores 0.3 with those phrases.
    """
    if isinstance(phrases, str):
        raise RewardError("reasoning_connectors: phrases must be a list of strings, got one string",
                          where="rewards[].args.phrases", fix='write phrases: ["because … therefore"]')
    patterns = [_pattern(p) for p in phrases]
    out = []
    for t in _texts(trajectories, completions, text, "reasoning_connectors"):
        value = per_phrase * sum(1 for p in patterns if p.search(t))
        out.append(float(min(value, max_reward) if max_reward is not None else value))
    return out


def length_penalty(
    trajectories: Sequence[Any],
    *,
    completions: Sequence[str],
    limit: int = 200,
    per: int = 10,
    penalty: float = 0.1,
    unit: str = "chars",
    max_penalty: float | None = None,
    text: str = "all",
) -> list[float]:
    """A penalty for every `per` characters (or tokens) beyond `limit`.

    `-penalty * ceil((length - limit) / per)` when the text is longer than
    `limit`, else 0.0: with the defaults, 201–210 characters cost -0.1, 211–220
    cost -0.2, and so on. Characters are Unicode code points (one per Chinese
    character); tokens are the sampled tokens of the episode
    (`trajectory.num_sampled_tokens`, tool output excluded).

    Args:
        trajectories: the batch (toolrl passes it positionally).
        completions: the final assistant message of each trajectory (passed by toolrl).
        limit: free length.
        per: size of one penalty step.
        penalty: penalty per step (a positive number; the reward is its negative).
        unit: `"chars"` or `"tokens"`.
        max_penalty: cap on the penalty's size (None: no cap).
        text: with `unit: chars`, `"all"` measures every assistant message, `"final"` only the last one.

    Returns:
        One float per trajectory, <= 0.

    Example:
        ```yaml
        rewards:
          - {name: length_penalty, weight: 1.0, args: {limit: 200, per: 10, penalty: 0.1}}
        ```
        A 235-character answer scores -0.4.
    """
    if limit < 0 or per <= 0 or penalty < 0:
        raise RewardError(f"length_penalty: need limit >= 0, per > 0, penalty >= 0 (got {limit}, {per}, {penalty})",
                          where="rewards[].args", fix="e.g. args: {limit: 200, per: 10, penalty: 0.1}")
    if unit == "chars":
        lengths = [len(t) for t in _texts(trajectories, completions, text, "length_penalty")]
    elif unit == "tokens":
        lengths = [t.num_sampled_tokens for t in trajectories]
    else:
        raise RewardError(f"length_penalty: unit must be 'chars' or 'tokens', got {unit!r}",
                          where="rewards[].args.unit", fix="use chars or tokens")
    out = []
    for n in lengths:
        value = penalty * math.ceil((n - limit) / per) if n > limit else 0.0
        if max_penalty is not None:
            value = min(value, max_penalty)
        out.append(-float(value) if value else 0.0)
    return out
