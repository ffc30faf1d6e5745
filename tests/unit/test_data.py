"""`toolrl data make`: suite lookup, argument checks, schema checks, determinism, the CLI.

Suites here are small fixture plugins registered by hand, plus the real
plugins of plugins/envs/* (which `make` installs) for the end-to-end checks.
"""

import json
import os
import subprocess
import sys

import pytest

from toolrl import hookimpl
from toolrl.data import make_command, make_tasks, parse_args, write_tasks
from toolrl.errors import PluginError, ToolrlError
from toolrl.types import Task, load_tasks


def _task(i, **kw):
    return Task(id=kw.pop("id", f"t{i}"), messages=({"role": "user", "content": f"q{i}"},), **kw)


class CountingSuites:
    """A fixture plugin: well-behaved and misbehaving suites."""

    @hookimpl
    def register_task_suites(self, register):
        def counting(n, seed, *, start=0, word="q"):
            for i in range(n):
                yield Task(id=f"c{seed}-{i}", messages=({"role": "user", "content": f"{word} {start + i + seed}"},))

        def anything(n, seed, **kwargs):
            return [_task(i, metadata=dict(kwargs)) for i in range(n)]

        register("counting", counting)
        register("anything", anything)
        register("short", lambda n, seed: [_task(0)])
        register("dupes", lambda n, seed: [_task(i, id="same") for i in range(n)])
        register("not-tasks", lambda n, seed: ["task"] * n)
        register("bad-dicts", lambda n, seed: [{"id": f"d{i}"} for i in range(n)])
        register("dicts", lambda n, seed: [{"id": f"d{i}", "messages": [{"role": "user", "content": "q"}]}
                                           for i in range(n)])
        register("bad-json", lambda n, seed: [_task(i, metadata={"x": {1, 2}}) for i in range(n)])
        register("bad-role", lambda n, seed: [Task(id=f"r{i}", messages=({"role": "robot"},)) for i in range(n)])
        register("rejects", self.rejects)
        register("rejects-lazily", self.rejects_lazily)

    @staticmethod
    def rejects(n, seed, *, level=1):
        if level > 3:
            raise ValueError("level must be at most 3")
        return [_task(i) for i in range(n)]

    @staticmethod
    def rejects_lazily(n, seed, *, level=1):
        for i in range(n):
            if level > 3:
                raise ValueError(f"level {level} is too deep")
            yield _task(i)


@pytest.fixture
def suites(plugin_manager):
    plugin_manager.register(CountingSuites(), name="fixture_suites", distribution=None)
    return plugin_manager


def test_parse_args_reads_yaml_scalars():
    assert parse_args(["difficulty=easy", "max-digits=4", "p=0.5", "tool=false", "generators=a,b", "xs=[1, 2]",
                       "empty="]) == {"difficulty": "easy", "max_digits": 4, "p": 0.5, "tool": False,
                                      "generators": "a,b", "xs": [1, 2], "empty": ""}
    for bad in (["difficulty"], ["=3"], ["a b=1"]):
        with pytest.raises(ToolrlError, match="not of the form key=value"):
            parse_args(bad)
    with pytest.raises(ToolrlError, match="given twice"):
        parse_args(["a=1", "a=2"])


def test_make_tasks_passes_args_and_checks_count(suites):
    tasks = make_tasks("counting", 5, seed=2, start=10, word="w")
    assert [t.messages[0]["content"] for t in tasks] == ["w 12", "w 13", "w 14", "w 15", "w 16"]
    assert make_tasks("anything", 2, 0, free="form")[0].metadata == {"free": "form"}
    assert make_tasks("dicts", 2, 0)[1] == Task(id="d1", messages=({"role": "user", "content": "q"},))
    with pytest.raises(ToolrlError, match="produced 1 tasks, 3 were asked for"):
        make_tasks("short", 3, 0)
    with pytest.raises(ToolrlError, match="at least 1"):
        make_tasks("counting", 0, 0)


def test_unknown_suite_lists_available_and_the_plugin_to_install(suites):
    with pytest.raises(ToolrlError) as exc:
        make_tasks("bfcl", 3, 0)
    assert "no task suite named 'bfcl'" in exc.value.what and "counting" in exc.value.what
    assert "pip install -e plugins/envs/bfcl" in exc.value.fix and "toolrl-env-bfcl" in exc.value.fix
    with pytest.raises(ToolrlError) as exc:
        make_tasks("countng", 3, 0)
    assert "did you mean 'counting'" in exc.value.fix and "arith-tool (toolrl-env-code)" in exc.value.fix


def test_unknown_or_rejected_arguments(suites):
    with pytest.raises(ToolrlError, match="has no argument") as exc:
        make_tasks("counting", 3, 0, strat=1)
    assert "start instead of strat" in exc.value.fix and "valid arguments: start, word" in exc.value.fix
    with pytest.raises(ToolrlError, match="level must be at most 3"):
        make_tasks("rejects", 3, 0, level=9)
    with pytest.raises(ToolrlError, match="rejected its arguments .*ValueError: level 4 is too deep"):
        make_tasks("rejects-lazily", 3, 0, level=4)


@pytest.mark.parametrize("suite, match", [
    ("dupes", "duplicate task id 'same'"),
    ("not-tasks", "not a toolrl.types.Task or dict"),
    ("bad-dicts", "'messages' must be a non-empty list"),
    ("bad-json", "not JSON-serialisable"),
    ("bad-role", "breaks the schema"),
])
def test_misbehaving_suites_are_plugin_errors_naming_the_plugin(suites, suite, match):
    with pytest.raises(PluginError, match=match) as exc:
        make_tasks(suite, 2, 0)
    assert "fixture_suites" in exc.value.where


def test_progress_bar_does_not_change_the_tasks(suites):
    assert make_tasks("counting", 300, 1, progress=True) == make_tasks("counting", 300, 1, progress=False)


def test_make_command_writes_the_same_bytes_for_the_same_seed(suites, tmp_path, capsys):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "sub" / "b.jsonl", tmp_path / "c.jsonl"
    make_command("counting", n=20, seed=3, out=str(a), args=["word=x"])
    make_command("counting", n=20, seed=3, out=str(b), args=["word=x"])
    make_command("counting", n=20, seed=4, out=str(c), args=["word=x"])
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert "wrote 20 counting tasks (seed 3, word=x)" in capsys.readouterr().err
    assert load_tasks(a) == make_tasks("counting", 20, 3, word="x")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    with pytest.raises(ToolrlError, match="is a directory"):
        write_tasks(make_tasks("counting", 1, 0), tmp_path)


def _cli(*args):
    env = dict(os.environ)
    env.pop("TOOLRL_NO_ENTRYPOINTS", None)  # the real, pip-installed plugins
    return subprocess.run([sys.executable, "-m", "toolrl.cli", "data", "make", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def _installed(dist):
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(dist)
    except PackageNotFoundError:
        return False
    return True


@pytest.mark.integration  # subprocesses with the real, pip-installed plugins
@pytest.mark.parametrize("suite, args, dist", [
    ("arith-tool", ["difficulty=easy"], "toolrl-env-code"),
    ("code", ["families=caesar,rotate"], "toolrl-env-code"),
    ("memory", ["difficulty=hard"], "toolrl-env-memory"),
    ("bfcl", ["categories=simple,parallel"], "toolrl-env-bfcl"),
])
def test_cli_end_to_end_with_the_installed_plugins(tmp_path, suite, args, dist):
    if not _installed(dist):
        pytest.skip(f"{dist} is not installed (make installs plugins/envs/*)")
    out1, out2 = tmp_path / "1.jsonl", tmp_path / "2.jsonl"
    r = _cli(suite, "--n", "12", "--seed", "5", "--out", str(out1), *args)
    assert r.returncode == 0, r.stderr
    assert _cli(suite, "--n", "12", "--seed", "5", "--out", str(out2), *args).returncode == 0
    assert out1.read_bytes() == out2.read_bytes()
    tasks = load_tasks(out1)
    assert len(tasks) == 12 and all(json.dumps(t.to_dict()) for t in tasks)


@pytest.mark.integration
def test_cli_errors_exit_2_without_traceback(tmp_path):
    r = _cli("no-such-suite", "--n", "3", "--out", str(tmp_path / "x.jsonl"))
    assert r.returncode == 2 and "no task suite named 'no-such-suite'" in r.stderr and "Traceback" not in r.stderr
    if _installed("toolrl-env-code"):
        r = _cli("arith-tool", "--n", "3", "--out", str(tmp_path / "x.jsonl"), "difficulty=insane")
        assert r.returncode == 2 and "unknown difficulty 'insane'" in r.stderr and "Traceback" not in r.stderr
        r = _cli("arith-tool", "--n", "3", "--out", str(tmp_path / "x.jsonl"), "level")
        assert r.returncode == 2 and "not of the form key=value" in r.stderr
