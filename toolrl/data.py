"""`toolrl data make`: write a task suite to a JSONL file.

Suites are registered by plugins through `register_task_suites` as
`fn(n: int, seed: int, **args) -> Iterable[Task | dict]`. This module finds the
suite, checks the user's `key=value` arguments against the function's
signature, consumes what it yields (with a progress bar for large N), checks
every task against the documented schema (docs/tasks.md) and writes the file
atomically. The same (suite, n, seed, args) always writes the same bytes.

    from toolrl.data import make_tasks
    tasks = make_tasks("arith-tool", n=10, seed=0, difficulty="easy")
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from toolrl.errors import PluginError, TaskFormatError, ToolrlError
from toolrl.types import Task

logger = logging.getLogger(__name__)

# Suites that toolrl's own plugin distributions provide, for the "not installed" hint.
KNOWN_SUITES: dict[str, tuple[str, str]] = {
    "arith-tool": ("toolrl-env-code", "plugins/envs/code"),
    "code": ("toolrl-env-code", "plugins/envs/code"),
    "gsm": ("toolrl-env-code", "plugins/envs/code"),
    "memory": ("toolrl-env-memory", "plugins/envs/memory"),
    "bfcl": ("toolrl-env-bfcl", "plugins/envs/bfcl"),
}

PROGRESS_MIN_N = 200
"""Show a progress bar from this many tasks on."""


class SuiteArgsError(ToolrlError):
    """A `key=value` argument of `toolrl data make` is malformed or unknown to the suite."""


def parse_args(args: Sequence[str]) -> dict[str, Any]:
    """`("difficulty=easy", "max_digits=4")` -> `{"difficulty": "easy", "max_digits": 4}`.

    Values are read as YAML scalars (numbers, booleans, null, `[a, b]` lists);
    everything else stays a string, so `generators=a,b` gives `"a,b"`.
    """
    import yaml

    out: dict[str, Any] = {}
    for text in args:
        key, sep, raw = text.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise SuiteArgsError(
                f"suite argument {text!r} is not of the form key=value",
                where="toolrl data make",
                fix="write e.g. difficulty=easy (no spaces around '='; options such as --n go before the arguments)",
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if key in out:
            raise SuiteArgsError(f"suite argument {key!r} is given twice", where="toolrl data make",
                                 fix=f"keep one {key}=...")
        out[key] = value
    return out


def suite_parameters(fn: Callable[..., Any]) -> tuple[list[str], bool]:
    """The keyword arguments a suite accepts (besides n and seed), and whether it takes **kwargs."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return [], True
    names: list[str] = []
    var_kw = False
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) and p.name not in (
            "n", "seed"):
            names.append(p.name)
    return names, var_kw


def get_suite(name: str) -> Callable[..., Iterable[Task]]:
    """The registered suite function, or an error listing the available suites and where to get the missing one."""
    from toolrl import plugins

    reg = plugins.registry("task_suites")
    if name in reg:
        return reg.get(name)
    available = ", ".join(reg.names()) or "none"
    if name in KNOWN_SUITES:
        dist, path = KNOWN_SUITES[name]
        fix = (f"install the plugin that provides it: pip install -e {path}  (distribution {dist}), "
               "then check `toolrl plugins`")
    else:
        import difflib

        known = sorted(set(reg.names()) | set(KNOWN_SUITES))
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        others = ", ".join(f"{s} ({d})" for s, (d, _) in sorted(KNOWN_SUITES.items()))
        fix = f"{hint}toolrl's own suites and their plugins: {others}"
    raise ToolrlError(f"no task suite named {name!r} is registered (available: {available})",
                      where="toolrl data make", fix=fix)


def check_args(suite: str, fn: Callable[..., Any], args: Mapping[str, Any]) -> None:
    names, var_kw = suite_parameters(fn)
    if var_kw:
        return
    unknown = sorted(set(args) - set(names))
    if unknown:
        import difflib

        hints = [f"{difflib.get_close_matches(u, names, n=1)[0]} instead of {u}" for u in unknown
                 if difflib.get_close_matches(u, names, n=1)]
        raise SuiteArgsError(
            f"suite {suite!r} has no argument(s) {', '.join(repr(u) for u in unknown)}",
            where="toolrl data make",
            fix=(f"did you mean {', '.join(hints)}? " if hints else "")
            + f"valid arguments: {', '.join(names) or 'none'} (see docs/tasks.md)",
        )


def make_tasks(suite: str, n: int, seed: int = 0, *, progress: bool | None = None, **args: Any) -> list[Task]:
    """Generate `n` tasks of `suite` with `seed`; every task is checked against the schema.

    Raises ToolrlError for an unknown suite, unknown or bad arguments, or a
    suite that breaks the schema (the message names the suite's plugin).
    """
    if n < 1:
        raise SuiteArgsError(f"--n must be at least 1, got {n}", where="toolrl data make", fix="pass --n 100")
    fn = get_suite(suite)
    check_args(suite, fn, args)
    owner = _owner(suite)
    show = (n >= PROGRESS_MIN_N) if progress is None else progress
    try:  # a generator suite runs (and may reject its arguments) only while it is consumed
        tasks = list(_consume(fn(n=n, seed=seed, **args), n, suite, show))
    except ToolrlError:
        raise
    except (TypeError, ValueError) as exc:
        raise SuiteArgsError(f"suite {suite!r} rejected its arguments {args!r}: {type(exc).__name__}: {exc}",
                             where="toolrl data make", fix="check the argument values against docs/tasks.md") from exc
    seen: dict[str, int] = {}
    for i, task in enumerate(tasks):
        where = f"task #{i} of suite {suite!r} (plugin {owner})"
        if isinstance(task, Mapping):  # a dict in the JSONL task format is fine too
            try:
                task = tasks[i] = Task.from_dict(task, where=where)
            except TaskFormatError as exc:
                raise PluginError(f"the suite wrote a task that breaks the schema: {exc.what}", where=where,
                                  fix=exc.fix or "see docs/tasks.md") from None
        if not isinstance(task, Task):
            raise PluginError(f"the suite yielded {type(task).__name__}, not a toolrl.types.Task or dict",
                              where=where, fix="yield Task objects (or task dicts) from the suite function")
        data = task.to_dict()
        try:
            json.dumps(data, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PluginError(f"the task is not JSON-serialisable: {exc}", where=where,
                              fix="keep env_args and metadata to JSON types (str, numbers, lists, dicts)") from None
        try:
            Task.from_dict(data, where=where)
        except TaskFormatError as exc:
            raise PluginError(f"the suite wrote a task that breaks the schema: {exc.what}", where=where,
                              fix=exc.fix or "see docs/tasks.md") from None
        if task.id in seen:
            raise PluginError(f"duplicate task id {task.id!r} (also task #{seen[task.id]})", where=where,
                              fix="make the suite's ids unique, e.g. f'{suite}-{seed}-{index}'")
        seen[task.id] = i
    if len(tasks) != n:
        raise ToolrlError(f"suite {suite!r} produced {len(tasks)} tasks, {n} were asked for",
                          where="toolrl data make", fix="lower --n, or widen the suite's arguments")
    return tasks


def _consume(produced: Iterable[Task], n: int, suite: str, show: bool) -> Iterable[Task]:
    if not show:
        yield from _take(produced, n)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(f"[bold]{suite}[/]"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as bar:
        job = bar.add_task(suite, total=n)
        for task in _take(produced, n):
            bar.advance(job)
            yield task


def _take(produced: Iterable[Task], n: int) -> Iterable[Task]:
    for i, task in enumerate(produced):
        if i >= n:
            return
        yield task


def write_tasks(tasks: Sequence[Task], out: str | Path) -> Path:
    """Write one `Task.to_dict()` per line, atomically (a temporary file renamed into place)."""
    path = Path(out)
    if path.exists() and path.is_dir():
        raise ToolrlError("--out is a directory", where=str(path), fix="pass a file name, e.g. tasks.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for t in tasks:
                fh.write(json.dumps(t.to_dict(), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def make_command(suite: str, *, n: int, seed: int, out: str, args: Sequence[str] = ()) -> Path:
    """What `toolrl data make SUITE --n N --seed S --out FILE [key=value ...]` runs."""
    parsed = parse_args(args)
    tasks = make_tasks(suite, n, seed, progress=None if sys.stderr.isatty() else False, **parsed)
    path = write_tasks(tasks, out)
    shown = " ".join(f"{k}={v}" for k, v in parsed.items())
    print(f"wrote {len(tasks)} {suite} tasks (seed {seed}{', ' + shown if shown else ''}) to {path}", file=sys.stderr)
    return path


def _owner(suite: str) -> str:
    from toolrl import plugins

    entry = plugins.registry("task_suites").entry(suite)
    return f"{entry.plugin}" + (f" from {entry.distribution}" if entry.distribution else "")
