"""The `code` suite: write one Python function, checked by generated tests (never HumanEval).

Problems come from the procedural families in problems.py. Each task asks for
one function; `metadata.tests` is a list of `assert` lines and
`metadata.entry_point` the function's name (toolrl-sandbox's `run_tests`
format 1, which the code reward runs: pass rate = passed / len(tests)). The
prompt shows two examples that are not among the tests.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

from toolrl.errors import ToolrlError
from toolrl.types import Task

from toolrl_env_code.env import ENV_NAME, PYTHON_TOOL
from toolrl_env_code.problems import FAMILIES, Problem
from toolrl_env_code.prompts import CODE_SYSTEM, CODE_SYSTEM_NO_TOOL


def _call(entry: str, args: tuple[Any, ...]) -> str:
    return f"{entry}({', '.join(repr(a) for a in args)})"


def render_prompt(p: Problem) -> str:
    lines = [f"Write a Python function `{p.signature}`.", "", p.statement, "", "Examples:"]
    lines += [f"    {_call(p.entry_point, args)} == {p.reference(*args)!r}" for args in p.examples]
    return "\n".join(lines)


def render_tests(p: Problem) -> list[str]:
    return [f"assert {_call(p.entry_point, args)} == {p.reference(*args)!r}" for args in p.inputs]


def _families(families: Any) -> list[str]:
    if families is None:
        return list(FAMILIES)
    names = [f.strip() for f in families.split(",")] if isinstance(families, str) else \
        [str(f) for f in families] if isinstance(families, Sequence) else None
    if not names or any(n not in FAMILIES for n in names):
        bad = [n for n in (names or [families]) if n not in FAMILIES]
        raise ToolrlError(f"unknown problem family/families {bad}", where="toolrl data make code",
                          fix=f"use a comma-separated list of: {', '.join(FAMILIES)}")
    return list(dict.fromkeys(names))


def make_code_tasks(n: int, seed: int = 0, *, families: Any = None, tool: bool = True) -> Iterator[Task]:
    """Yield `n` function-writing tasks.

    Args:
        families: comma-separated problem families to draw from (default: all 21 in problems.py).
        tool: False writes the same problems without the python tool (answer directly).
    """
    names = _families(families)
    if not isinstance(tool, bool):
        raise ToolrlError(f"tool must be true or false, got {tool!r}", where="toolrl data make code",
                          fix="write tool=false")
    rng = random.Random(f"toolrl-code-{seed}")
    for i in range(n):
        problem = FAMILIES[names[rng.randrange(len(names))]](rng)
        yield Task(
            id=f"code-s{seed}-{i:05d}",
            messages=({"role": "system", "content": CODE_SYSTEM if tool else CODE_SYSTEM_NO_TOOL},
                      {"role": "user", "content": render_prompt(problem)}),
            tools=(PYTHON_TOOL,) if tool else (),
            env=ENV_NAME if tool else None,
            metadata={
                "tests": render_tests(problem),
                "entry_point": problem.entry_point,
                "family": problem.family,
                "suite": "code",
            },
        )
