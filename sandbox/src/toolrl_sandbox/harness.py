"""``run_tests``: turn a solution plus tests into one sandboxed program.

Accepted test formats (see docs/sandbox.md, "run_tests format"):

1. ``list[str]``: each string is one test, usually a single ``assert``
   statement (``"assert add(1, 2) == 3"``); a test may be several lines.
   They run in order in the solution's namespace; ``total = len(tests)``.
2. ``str`` plus ``entry_point``: HumanEval style.  The source defines
   ``check(candidate)``; the harness calls ``check(<entry_point>)``.  One
   test (``total = 1``), as in the HumanEval paper.
3. ``str`` defining ``unittest.TestCase`` subclasses: every test method is
   one test.
4. any other ``str``: a script of asserts, one test that passes when the
   script runs to the end.

The program reports each test's outcome as a JSON line on file descriptor 3
(the executor's side channel), so partial progress survives a timeout.  The
tests run in the same process as the solution: a hostile solution can forge
them, exactly as it could with any in-process checker.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from .results import ExecResult, TestReport

_TEMPLATE = r'''
def __toolrl_harness(spec):
    import json, os, sys, traceback, unittest
    ns = globals()

    def emit(**rec):
        data = (json.dumps(rec) + "\n").encode()
        while data:
            data = data[os.write(3, data):]

    def describe(exc):
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return text[-500:]

    tests, entry = spec["tests"], spec["entry_point"]
    total = len(tests) if isinstance(tests, list) else 1
    try:
        exec(compile(spec["code"], "<solution>", "exec"), ns)
    except BaseException as exc:
        emit(total=total, error="solution: " + describe(exc))
        raise
    passed = 0
    if isinstance(tests, list):
        emit(total=total)
        for i, src in enumerate(tests):
            try:
                exec(compile(src, "<test %d>" % i, "exec"), ns)
                passed += 1
                emit(i=i, ok=True)
            except BaseException as exc:
                emit(i=i, ok=False, msg="%s: %s" % (src.strip().splitlines()[0][:200] if src.strip() else "", describe(exc)))
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    break
    else:
        before = set(ns)
        try:
            exec(compile(tests, "<tests>", "exec"), ns)
        except BaseException as exc:
            emit(total=1)
            emit(i=0, ok=False, msg="tests: " + describe(exc))
            raise
        cases = [v for k, v in ns.items() if k not in before and isinstance(v, type)
                 and issubclass(v, unittest.TestCase)]
        if entry is not None:
            emit(total=1)
            try:
                ns["check"](ns[entry])
                passed = 1
                emit(i=0, ok=True)
            except BaseException as exc:
                emit(i=0, ok=False, msg="check(%s): %s" % (entry, describe(exc)))
        elif cases:
            suite = unittest.TestSuite()
            loader = unittest.TestLoader()
            for case in cases:
                suite.addTests(loader.loadTestsFromTestCase(case))
            total = suite.countTestCases()
            emit(total=total)
            result = unittest.TextTestRunner(stream=sys.stderr, verbosity=0).run(suite)
            bad = result.failures + result.errors
            for i, (test, text) in enumerate(bad):
                emit(i=i, ok=False, msg="%s: %s" % (test.id(), text.strip().splitlines()[-1][:300]))
            passed = max(result.testsRun - len(bad) - len(result.skipped), 0)
            for _ in range(passed):
                emit(ok=True)
        else:
            emit(total=1)
            passed = 1
            emit(i=0, ok=True)
    sys.stdout.flush()
    if passed != total:
        raise SystemExit(1)


__toolrl_harness(__TOOLRL_SPEC__)
'''


def build_program(code: str, tests: str | Sequence[str], entry_point: str | None) -> str:
    """The Python program that runs ``code`` and then ``tests``."""
    if isinstance(tests, str):
        if entry_point is None and "def check(" in tests and "TestCase" not in tests:
            raise ValueError("tests define check(candidate): pass entry_point='<function name>' (HumanEval form)")
        spec_tests: str | list[str] = tests
    else:
        spec_tests = [str(t) for t in tests]
        if entry_point is not None:
            raise ValueError("entry_point only applies to tests given as one source string")
    spec = {"code": code, "tests": spec_tests, "entry_point": entry_point}
    # repr() of str/list/None is a Python literal the program can embed verbatim.
    return _TEMPLATE.replace("__TOOLRL_SPEC__", repr(spec))


def parse_report(result: ExecResult, side: str, tests: str | Sequence[str]) -> TestReport:
    """Combine the side-channel lines with the run's result."""
    total = len(tests) if not isinstance(tests, str) else 1
    passed = 0
    failures: list[str] = []
    for line in side.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        if "total" in rec and isinstance(rec["total"], int):
            total = rec["total"]
            if "error" in rec:
                failures.append(str(rec["error"]))
        elif rec.get("ok") is True:
            passed += 1
        elif rec.get("ok") is False:
            failures.append(str(rec.get("msg", "failed")))
    if result.status != "ok" and not failures:
        failures.append(f"run ended with status {result.status}")
    return TestReport(min(passed, total), total, result, tuple(failures))
