"""Tests that need no Docker engine: harness format, probing, packaging rules."""

from __future__ import annotations

import ast
import collections
import json
import subprocess
import sys
import threading
import time

import docker
import pytest

from toolrl_sandbox import ExecResult, harness, image as image_mod, rootfs
from toolrl_sandbox.bench import Row, markdown, percentile, render


class _HangingImages:
    """A client whose pull never returns: probing must give up on time."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def get(self, name: str) -> None:
        raise docker.errors.ImageNotFound(name)

    def pull(self, repo: str, tag: str) -> None:
        self.release.wait(30)


class _FakeClient:
    def __init__(self) -> None:
        self.images = _HangingImages()


def test_base_probe_gives_up_quickly() -> None:
    fake = _FakeClient()
    t0 = time.monotonic()
    assert image_mod._base_available(fake, "python:3.12-slim", pull_timeout=1.0) is False  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 2.0
    fake.images.release.set()


def test_mirror_and_suite_come_from_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    suite = rootfs.host_suite()
    assert suite and rootfs.host_mirror(suite).startswith(("http://", "https://", "file:/"))
    monkeypatch.setenv("TOOLRL_SANDBOX_MIRROR", "http://mirror.invalid/debian")
    assert rootfs.host_mirror(suite) == "http://mirror.invalid/debian"


def test_package_does_not_import_toolrl() -> None:
    code = ("import sys, toolrl_sandbox, toolrl_sandbox.cli, toolrl_sandbox.bench; "
            "bad = [m for m in sys.modules if m == 'toolrl' or m.startswith('toolrl.')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_executor_is_stdlib_only() -> None:
    names: set[str] = set()
    for asset in image_mod.EXECUTOR_FILES:
        tree = ast.parse(image_mod._asset(asset))
        names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        if asset == "executor.py":
            names |= set(ast.literal_eval(next(n.value for n in tree.body if isinstance(n, ast.Assign)
                                               and getattr(n.targets[0], "id", "") == "WARM_MODULES")))
    siblings = {"capture", "grade_run", "grading", "seccomp"}
    assert siblings <= names  # the executor's siblings in the image
    names -= siblings
    assert names and all(name.split(".")[0] in sys.stdlib_module_names for name in names), names


def test_seccomp_programs_jump_inside_themselves() -> None:
    from toolrl_sandbox import seccomp

    for machine in ("x86_64", "aarch64"):
        prog = seccomp.program(machine)
        assert prog is not None and prog[-1][0] == 0x06  # ends with a return
        for i, (code, jt, jf, _k) in enumerate(prog):
            if code & 0x07 == 0x05:  # a jump
                assert i + 1 + max(jt, jf) < len(prog), (machine, i)
    assert seccomp.program("sparc64") is None


def test_harness_rejects_ambiguous_formats() -> None:
    with pytest.raises(ValueError, match="entry_point"):
        harness.tests_frame("def check(candidate):\n    pass\n", None)
    with pytest.raises(ValueError, match="entry_point"):
        harness.tests_frame(["assert x == 1"], "f")
    with pytest.raises(ValueError, match="function name"):
        harness.tests_frame("def check(candidate):\n    pass\n", "not a name")
    with pytest.raises(ValueError, match="empty"):
        harness.tests_frame([], None)
    with pytest.raises(ValueError, match="test 1: a stdin/stdout test"):
        harness.io_cases([{"input": "1", "output": "1"}, "assert f(1) == 1"])
    with pytest.raises(ValueError, match="must be strings"):
        harness.io_cases([("1", 1)])
    assert harness.io_cases(["assert x == 1"]) is None
    assert harness.io_cases([{"input": "1\n", "output": "2"}, ("a", "b")]) == [("1\n", "2"), ("a", "b")]
    assert harness.tests_frame(["assert x == 1"], None) == {"op": "tests", "tests": ["assert x == 1"],
                                                            "entry_point": None}


def test_output_normalisation() -> None:
    assert harness.normalise("1 2  \r\n3\n\n\n") == harness.normalise("1 2\n3") == "1 2\n3"
    assert harness.normalise(" 1\n\n2") != harness.normalise("1\n2")  # leading space, inner blank line count
    assert harness.normalise("1   2\n3", "tokens") == harness.normalise("1 2 3\n", "tokens")
    assert harness.normalise("3\n", "exact") != harness.normalise("3", "exact")
    with pytest.raises(ValueError, match="compare must be one of"):
        harness.normalise("x", "fuzzy")  # type: ignore[arg-type]


def test_plain_value_codec_round_trips_and_refuses_the_rest() -> None:
    from toolrl_sandbox import grading

    values = [None, True, 0, -(10 ** 30), 1.5, float("inf"), "é", b"\x00\xff", [1, (2, 3)], {(1, 2): {"a": [None]}},
              {1, 2}, frozenset({"x"}), 1 + 2j, ()]
    for v in values:
        wire = json.loads(json.dumps(grading.encode(v)))
        back = grading.decode(wire)
        assert back == v and type(back) is type(v)
    nan = grading.decode(json.loads(json.dumps(grading.encode(float("nan")))))
    assert nan != nan

    class Always:
        def __eq__(self, other: object) -> bool:
            return True

    class MyInt(int):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = int.__hash__

    for bad in (Always(), [Always()], {"k": Always()}, object(), print, iter([1]), collections.deque([1])):
        with pytest.raises(grading.NotPlain):
            grading.encode(bad)
    # subclasses arrive as their plain value, whatever their methods claim
    point = collections.namedtuple("point", "x y")(1, 2)
    for sub, plain in ((MyInt(3), 3), ([MyInt(3)], [3]), (collections.Counter("aab"), {"a": 2, "b": 1}),
                       (point, (1, 2)), (collections.OrderedDict(a=1), {"a": 1}), (True, True)):
        back = grading.decode(json.loads(json.dumps(grading.encode(sub))))
        assert back == plain and type(back) is type(plain), (sub, back)
        assert grading.decode(json.loads(json.dumps(grading.encode(MyInt(3))))) != 4
    for forged in ({"t": "tuple"}, {"t": "ref", "v": [1]}, {"a": 1}, {"t": "dict", "v": [[1]]},
                   {"t": "float", "v": "1e3"}):
        with pytest.raises(ValueError):
            grading.decode(forged)


def test_parse_report_counts_side_channel_lines() -> None:
    ok = ExecResult("ok", "", "", 0, 1.0)
    side = ('{"total": 3}\n{"i": 0, "ok": true}\n{"i": 1, "ok": false, "msg": "boom"}\nnot json\n{"i": 2, "ok": true}\n'
            '{"i": 2, "ok": true}\n{"i": 7, "ok": true}\n')
    rep = harness.parse_report(ok, side, ["a", "b", "c"])
    assert (rep.passed, rep.total, rep.failures) == (2, 3, ("boom",))  # repeats and unknown indices ignored
    timeout = ExecResult("timeout", "", "", -9, 1.0)
    rep = harness.parse_report(timeout, "", ["a", "b"])
    assert (rep.passed, rep.total) == (0, 2) and "timeout" in rep.failures[0]


def test_bench_helpers() -> None:
    assert percentile([5.0, 1.0, 3.0], 0.5) == 3.0
    rows = [Row("pool reuse", "trivial", 8, 10, 10, 3.0, 5.0, 250.0)]
    assert "pool reuse" in render(rows) and "| pool reuse | trivial | 8 |" in markdown(rows)
