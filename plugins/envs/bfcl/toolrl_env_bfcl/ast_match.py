"""BFCL's AST match: do the model's calls equal one of the acceptable answers?

A possible answer lists calls as `{function_name: {param: [acceptable values]}}`.
The model's calls match when (as in BFCL's AST checker):

* there are as many calls as answer calls, and they pair up one-to-one in any
  order (parallel calls need not keep the question's order);
* each pair has the same function name (`a.b` and `a_b` count as equal, since
  some templates cannot write dots);
* every argument the model gave is a parameter of the answer, of the schema's
  type (an int is a valid number; a float is not a valid integer), and equal to
  one of its acceptable values; strings compare case-insensitively and ignoring
  spaces and `,./-_*^`; lists compare element by element; nested objects key by key;
* every answer parameter the model left out lists `""` (optional) among its values.

For irrelevance tasks (no answer) the model must make no call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_STRIP = re.compile(r"[ ,./\-_*^]")


@dataclass(frozen=True)
class MatchResult:
    ok: bool
    reason: str = ""


def _std(s: str) -> str:
    return _STRIP.sub("", s).lower().replace("'", '"')


def value_matches(model: Any, expected: Any) -> bool:
    """One model value against one acceptable value (recursively for lists and objects)."""
    if isinstance(expected, Mapping):
        if not isinstance(model, Mapping):
            return False
        for key, value in model.items():
            accs = expected.get(key)
            if accs is None:
                return False
            accs = accs if isinstance(accs, list) else [accs]
            if not any(value_matches(value, a) for a in accs if a != ""):
                return False
        return all(key in model or (isinstance(accs, list) and "" in accs) for key, accs in expected.items())
    if isinstance(expected, (list, tuple)):
        if not isinstance(model, (list, tuple)) or len(model) != len(expected):
            return False
        return all(value_matches(m, e) for m, e in zip(model, expected))
    if isinstance(expected, str):
        return isinstance(model, str) and _std(model) == _std(expected)
    if isinstance(expected, bool):
        return model is expected
    if isinstance(expected, (int, float)):
        return isinstance(model, (int, float)) and not isinstance(model, bool) and float(model) == float(expected)
    return model == expected


def type_ok(value: Any, schema: Mapping[str, Any] | None) -> bool:
    """Does `value` have the JSON-schema type the parameter declares (no type = anything)?"""
    kind = (schema or {}).get("type")
    if kind is None:
        return True
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, (list, tuple))
    if kind == "object":
        return isinstance(value, Mapping)
    return True


def same_name(a: str, b: str) -> bool:
    return a == b or a.replace(".", "_") == b.replace(".", "_")


def call_matches(name: str, args: Mapping[str, Any], expected: Mapping[str, Mapping[str, Sequence[Any]]],
                 schemas: Mapping[str, Mapping[str, Any]]) -> MatchResult:
    """One model call against one answer call `{function: {param: [acceptable values]}}`."""
    (exp_name, exp_params), = expected.items()
    if not same_name(name, exp_name):
        return MatchResult(False, f"called {name!r}, expected {exp_name!r}")
    props = (schemas.get(exp_name) or {}).get("properties") or {}
    if not isinstance(args, Mapping):
        return MatchResult(False, f"{name}: arguments are not an object")
    for param, value in args.items():
        if param not in exp_params:
            return MatchResult(False, f"{name}: unexpected parameter {param!r}")
        if value is not None and not type_ok(value, props.get(param)):
            return MatchResult(False, f"{name}: {param}={value!r} is not of type {props[param].get('type')}")
        accs = [a for a in exp_params[param] if a != ""]
        if not any(value_matches(value, a) for a in accs):
            return MatchResult(False, f"{name}: {param}={value!r} is not one of {accs!r}")
    for param, accs in exp_params.items():
        if param not in args and "" not in accs:
            return MatchResult(False, f"{name}: missing required parameter {param!r}")
    return MatchResult(True)


def calls_match(calls: Sequence[tuple[str, Mapping[str, Any]]], answer: Sequence[Mapping[str, Any]] | None,
                schemas: Mapping[str, Mapping[str, Any]]) -> MatchResult:
    """The model's calls of one turn against the whole answer (any order; one-to-one).

    Args:
        calls: (name, arguments) per model call, in the order made.
        answer: BFCL's `ground_truth` list, or None for irrelevance (no call expected).
        schemas: function name -> its parameters schema (JSON Schema), for type checks.
    """
    if answer is None:
        return MatchResult(not calls, "" if not calls else f"expected no call, got {len(calls)}")
    if len(calls) != len(answer):
        return MatchResult(False, f"made {len(calls)} call(s), expected {len(answer)}")
    # ok[i][j]: model call i matches answer call j; then find a perfect matching (sizes are small)
    reasons: list[str] = []
    ok = []
    for name, args in calls:
        row = []
        for exp in answer:
            r = call_matches(name, args, exp, schemas)
            row.append(r.ok)
            if not r.ok:
                reasons.append(r.reason)
        ok.append(row)
    used = [False] * len(answer)

    def assign(i: int) -> bool:
        if i == len(calls):
            return True
        for j in range(len(answer)):
            if ok[i][j] and not used[j]:
                used[j] = True
                if assign(i + 1):
                    return True
                used[j] = False
        return False

    if assign(0):
        return MatchResult(True)
    return MatchResult(False, reasons[0] if reasons else "the calls do not pair up with the answer")
