"""``run_tests``: check the test formats, and count what the trusted grader reported.

Accepted test formats (see docs/sandbox.md, "run_tests format"):

1. ``list[str]``: each string is one test, usually a single ``assert``
   statement (``"assert add(1, 2) == 3"``); a test may be several lines.
   ``total = len(tests)``.
2. ``str`` plus ``entry_point``: HumanEval style.  The source defines
   ``check(candidate)``; the grader calls ``check(<entry_point>)``.  One
   test (``total = 1``), as in the HumanEval paper.
3. ``str`` defining ``unittest.TestCase`` subclasses: every test method is
   one test.
4. any other ``str``: a script of asserts, one test that passes when the
   script runs to the end.
5. stdin/stdout: a list of ``{"input": str, "output": str}`` (or
   ``(input, output)`` pairs).  The solution runs once per case with the
   input on stdin; its stdout is compared *on the host* with the expected
   output after :func:`normalise` (the expected outputs never enter a
   container).

Formats 1-4 run in the container's grader process (``grading.py``), which
calls into the solution's separate process; only the grader's outcome lines
are counted here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from .results import ExecResult, TestReport

Compare = Literal["lines", "tokens", "exact"]
COMPARE_MODES: tuple[str, ...] = ("lines", "tokens", "exact")


def io_cases(tests: object) -> list[tuple[str, str]] | None:
    """The stdin/stdout cases in ``tests``, or None when ``tests`` is another format.

    Raises ValueError for a list that mixes formats or a case without input/output."""
    if isinstance(tests, (str, bytes)) or not isinstance(tests, Sequence) or not tests:
        return None
    shaped = [isinstance(t, Mapping) or (isinstance(t, (tuple, list)) and len(t) == 2) for t in tests]
    if not any(shaped):
        return None
    cases = []
    for i, t in enumerate(tests):
        if isinstance(t, Mapping) and "input" in t and "output" in t:
            pair = (t["input"], t["output"])
        elif isinstance(t, (tuple, list)) and len(t) == 2:
            pair = (t[0], t[1])
        else:
            raise ValueError(f"test {i}: a stdin/stdout test is {{'input': str, 'output': str}} "
                             f"(or an (input, output) pair); got {t!r:.100}")
        if not all(isinstance(x, str) for x in pair):
            raise ValueError(f"test {i}: input and output must be strings, got {type(pair[0]).__name__} "
                             f"and {type(pair[1]).__name__}")
        cases.append(pair)
    return cases


def tests_frame(tests: str | Sequence[str], entry_point: str | None) -> dict[str, Any]:
    """The frame that carries the tests to the grader process (formats 1-4)."""
    if isinstance(tests, str):
        if not tests.strip():
            raise ValueError("tests is an empty string: give a list of asserts or a test source")
        if entry_point is None and "def check(" in tests and "TestCase" not in tests:
            raise ValueError("tests define check(candidate): pass entry_point='<function name>' (HumanEval form)")
        spec: str | list[str] = tests
    else:
        if not isinstance(tests, Sequence) or not all(isinstance(t, str) for t in tests):
            raise ValueError("tests must be a source string, a list of strings (one test each) or a list of "
                             "{'input': ..., 'output': ...} stdin/stdout cases")
        if entry_point is not None:
            raise ValueError("entry_point only applies to tests given as one source string")
        spec = [str(t) for t in tests]
        if not spec:
            raise ValueError("tests is an empty list: give at least one test")
    if entry_point is not None and not (isinstance(entry_point, str) and entry_point.isidentifier()):
        raise ValueError(f"entry_point must be a function name, got {entry_point!r}")
    return {"op": "tests", "tests": spec, "entry_point": entry_point}


def parse_report(result: ExecResult, side: str, tests: str | Sequence[str]) -> TestReport:
    """Count the grader's outcome lines (one per test; the grader's last ``total`` wins)."""
    total = len(tests) if not isinstance(tests, str) else 1
    outcomes: dict[int, bool] = {}
    failures: list[str] = []
    for line in side.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        if isinstance(rec.get("total"), int) and not isinstance(rec.get("total"), bool):
            total = rec["total"]
        if "error" in rec:
            failures.append(str(rec["error"]))
        i = rec.get("i")
        if isinstance(i, int) and not isinstance(i, bool) and i not in outcomes:
            outcomes[i] = rec.get("ok") is True
            if rec.get("ok") is not True:
                failures.append(str(rec.get("msg", "failed")))
    passed = sum(1 for i, ok in outcomes.items() if ok and 0 <= i < total)
    if result.status != "ok" and not failures:
        failures.append(f"run ended with status {result.status}")
    return TestReport(min(passed, total), total, result, tuple(failures))


def normalise(text: str, mode: Compare = "lines") -> Any:
    """The form in which outputs are compared.

    * ``lines`` (default): ``\\r\\n``/``\\r`` become ``\\n``, trailing whitespace
      of every line and trailing empty lines are dropped; leading whitespace and
      inner blank lines still count.
    * ``tokens``: the whitespace-separated tokens (any spacing, any line breaks).
    * ``exact``: the bytes as printed.
    """
    if mode == "exact":
        return text
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if mode == "tokens":
        return text.split()
    if mode == "lines":
        return "\n".join(line.rstrip() for line in text.split("\n")).rstrip("\n")
    raise ValueError(f"compare must be one of {', '.join(COMPARE_MODES)}, got {mode!r}")


def io_report(results: Sequence[ExecResult], cases: Sequence[tuple[str, str]], compare: Compare) -> TestReport:
    """Compare each run's stdout with its expected output (on the host)."""
    passed = 0
    failures: list[str] = []
    for i, (res, (_inp, expected)) in enumerate(zip(results, cases)):
        if res.status == "ok" and normalise(res.stdout, compare) == normalise(expected, compare):
            passed += 1
        elif res.status != "ok":
            failures.append(f"case {i}: {res.status} (exit {res.exit_code}) {res.stderr.strip()[-300:]}")
        else:
            failures.append(f"case {i}: wrong output (got {res.stdout[:100]!r})")
    bad = [r for r in results if r.status != "ok"]
    infra = [r for r in bad if r.status == "infra_error"]
    summary = (infra or bad or list(results))[0]
    wall = sum(r.wall_ms for r in results)
    result = ExecResult(summary.status, summary.stdout, summary.stderr, summary.exit_code, wall)
    return TestReport(passed, len(cases), result, tuple(failures))
