"""Format rewards: a well-formed tool call, a required answer tag."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from toolrl.errors import RewardError


def format_tool_call(
    trajectories: Sequence[Any],
    *,
    tasks: Sequence[Any],
    min_calls: int = 1,
    check_names: bool = True,
    check_arguments: bool = True,
    score: float = 1.0,
) -> list[float]:
    """Did the agent make well-formed tool calls?

    Uses the counters the agent loop keeps on each trajectory rather than parsing
    the text again: `trajectory.tool_calls` (the calls its tool parser accepted)
    and `trajectory.malformed_tool_calls` (tool-call attempts it could not parse).
    A trajectory scores `score` when it made at least `min_calls` calls, none was
    malformed, and (optionally) every call names a tool the task offers with
    arguments that fit that tool's JSON schema (required keys present, no unknown
    keys when the schema sets `additionalProperties: false`); otherwise 0.0.

    Args:
        trajectories: the batch (toolrl passes it positionally).
        tasks: each trajectory's task; its `tools` are the offered schemas (passed by toolrl).
        min_calls: calls needed for the reward (0 rewards a clean answer without calls too).
        check_names: require each call's name to be one of the task's tools (skipped for tasks without tools).
        check_arguments: require each call's arguments to fit the tool's parameter schema.
        score: reward for a well-formed trajectory.

    Returns:
        One float per trajectory: `score` or 0.0.

    Example:
        ```yaml
        rewards:
          - {name: format_tool_call, weight: 0.2, args: {min_calls: 1}}
        ```
        A trajectory with one parsed call `get_weather(city="Paris")` to a task offering
        `get_weather(city: string, required)` and no malformed attempts scores 1.0.
    """
    if min_calls < 0:
        raise RewardError(f"format_tool_call: min_calls must be >= 0, got {min_calls}",
                          where="rewards[].args.min_calls",
                          fix="set args.min_calls to 0 or more")
    out: list[float] = []
    for traj, task in zip(trajectories, tasks):
        ok = traj.malformed_tool_calls == 0 and len(traj.tool_calls) >= min_calls
        if ok and (check_names or check_arguments):
            schemas = _tool_schemas(task)
            if schemas:
                ok = all(_call_fits(call, schemas, check_names, check_arguments) for call in traj.tool_calls)
        out.append(float(score) if ok else 0.0)
    return out


def _tool_schemas(task: Any) -> dict[str, Mapping[str, Any]]:
    out = {}
    for tool in getattr(task, "tools", ()) or ():
        fn = tool.get("function", tool) if isinstance(tool, Mapping) else {}
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            out[fn["name"]] = fn.get("parameters") or {}
    return out


def _call_fits(call: Any, schemas: Mapping[str, Mapping[str, Any]], check_names: bool, check_arguments: bool) -> bool:
    schema = schemas.get(call.name)
    if schema is None:
        return not check_names
    if not check_arguments:
        return True
    args = call.arguments
    if not isinstance(args, Mapping):
        return False
    required = schema.get("required") or []
    if any(r not in args for r in required):
        return False
    props = schema.get("properties")
    if schema.get("additionalProperties") is False and isinstance(props, Mapping):
        return all(k in props for k in args)
    return True


def format_answer_tag(
    trajectories: Sequence[Any],
    *,
    completions: Sequence[str],
    tag: str = "answer",
    at_end: bool = False,
    score: float = 1.0,
) -> list[float]:
    """Does the final message hold exactly one non-empty `<answer>...</answer>`?

    Args:
        trajectories: the batch (toolrl passes it positionally).
        completions: the final assistant message of each trajectory (passed by toolrl).
        tag: the tag name (`answer` -> `<answer>...</answer>`).
        at_end: also require the closing tag to end the message (trailing whitespace allowed).
        score: reward for a well-formed answer.

    Returns:
        One float per trajectory: `score` when there is exactly one opening and one
        closing tag, in that order, around non-blank text; else 0.0.

    Example:
        ```yaml
        rewards:
          - {name: format_answer_tag, weight: 0.1, args: {tag: answer, at_end: true}}
        ```
        `"2 + 2 = 4, so <answer>4</answer>"` scores 1.0; `"<answer></answer>"` and
        `"<answer>4"` score 0.0.
    """
    if not re.fullmatch(r"[A-Za-z][\w-]*", tag):
        raise RewardError(f"format_answer_tag: {tag!r} is not a valid tag name", where="rewards[].args.tag",
                          fix="use a plain name such as answer or final")
    open_t, close_t = f"<{tag}>", f"</{tag}>"
    out: list[float] = []
    for text in completions:
        text = text or ""
        lower = text.lower()
        ok = lower.count(open_t) == 1 and lower.count(close_t) == 1
        if ok:
            start, end = lower.index(open_t), lower.index(close_t)
            ok = start < end and text[start + len(open_t):end].strip() != ""
            if ok and at_end:
                ok = text[end + len(close_t):].strip() == ""
        out.append(float(score) if ok else 0.0)
    return out
