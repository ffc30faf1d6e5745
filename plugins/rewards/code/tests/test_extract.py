"""Extracting the program from a model's answer, and the checks code_pass_rate makes before any sandbox starts."""

import inspect

import pytest

from toolrl.errors import RewardError
from toolrl_rewards_code import code_blocks, code_pass_rate, extract_code, live_pools, without_main_guard
from toolrl_rewards_code.extract import without_truncated_tail


@pytest.mark.parametrize("text, expected", [
    ("```python\ndef f():\n    return 1\n```", "def f():\n    return 1"),
    ("```py\nx = 1\n```\ntext\n```Python\ny = 2\n```", "x = 1\n\ny = 2"),
    ("```\nz = 3\n```", "z = 3"),  # unlabelled fence when there is no python one
    ("```bash\nls\n```\n```\nz = 3\n```", "z = 3"),  # other languages never
    ("```bash\nls\n```", None),
    ("```python\ndef f():\n    return 1", "def f():\n    return 1"),  # cut off by max tokens: runs to the end
    ("```python\n\n```", None),
    ("just prose, def f(): pass", None),
    ("", None),
    (None, None),
])
def test_extract_code(text, expected):
    assert extract_code(text) == expected


def test_last_block_only():
    text = "```python\ndef f():\n    return 1\n```\nUsage:\n```python\nprint(f())\n```"
    assert extract_code(text, blocks="last") == "print(f())"
    assert extract_code(text) == "def f():\n    return 1\n\nprint(f())"
    with pytest.raises(ValueError, match="blocks must be"):
        extract_code(text, blocks="first")


def test_main_guard_is_removed_comments_kept():
    code = ("def f(x):\n    # add one\n    return x + 1\n\n"
            "if __name__ == \"__main__\":\n    n = int(input())\n    print(f(n))\n")
    assert without_main_guard(code) == "def f(x):\n    # add one\n    return x + 1"
    assert extract_code(f"```python\n{code}```") == "def f(x):\n    # add one\n    return x + 1"
    assert extract_code(f"```python\n{code}```", strip_main_guard=False).endswith("print(f(n))")
    assert without_main_guard("if '__main__' == __name__:\n    pass\nx = 1") == "x = 1"
    broken = "def f(:\nif __name__ == '__main__':\n    pass"
    assert without_main_guard(broken) == broken  # does not parse: left for the sandbox to report


def test_docstring_documents_every_argument():
    doc = inspect.getdoc(code_pass_rate)
    for section in ("Args:", "Returns:", "Example:"):
        assert section in doc
    for p in inspect.signature(code_pass_rate).parameters:
        assert f"{p}:" in doc, p


async def test_no_code_scores_zero_without_starting_a_pool(build):
    t = build.task("t", {"tests": ["assert True"]})
    trajs = [build.trajectory("t", "I don't know"), build.trajectory("t", "```bash\necho hi\n```")]
    out = await code_pass_rate(trajs, completions=[x.final_text for x in trajs], metadata=[t.metadata] * 2,
                               tasks=[t] * 2)
    assert out == [0.0, 0.0] and live_pools() == []


@pytest.mark.parametrize("meta, message", [
    ({}, "no tests in metadata['tests']"),
    ({"tests": []}, "no tests"),
    ({"tests": [1, 2]}, "no tests"),
    ({"tests": "  "}, "no tests"),
])
async def test_missing_tests_name_the_task(build, meta, message):
    t = build.task("task-9", meta)
    with pytest.raises(RewardError) as info:
        await code_pass_rate([None], completions=["```python\nx=1\n```"], metadata=[meta], tasks=[t])
    assert message in str(info.value) and "task 'task-9'" in str(info.value)


@pytest.mark.parametrize("args", [{"pool_size": 0}, {"mode": "warm"}, {"timeout": 0}, {"memory_mb": 1}])
async def test_bad_arguments(build, args):
    t = build.task("t", {"tests": ["assert True"]})
    with pytest.raises(RewardError, match="bad arguments"):
        await code_pass_rate([None], completions=["x"], metadata=[t.metadata], tasks=[t], **args)


def test_truncated_block_loses_its_unparsable_tail():
    cut = "```python\ndef f():\n    return 1\n\nprint('all tests pass"
    assert extract_code(cut) == "def f():\n    return 1"
    assert extract_code(cut, repair_truncated=False).endswith("print('all tests pass")
    closed = "```python\ndef f():\n    return 1\nprint('oops)\n```"  # closed fence: not truncated, left alone
    assert extract_code(closed).endswith("print('oops)")
    assert without_truncated_tail("(((") == "((("  # nothing parses: unchanged


# Hand-checked facts about the real completions in fixtures/completions.json:
# id -> (the answer's code block was cut off by the token limit, the extracted code parses)
REAL = {
    "add-qwen2.5": (False, True),
    "add-smollm2": (False, True),
    "is_palindrome-qwen2.5": (False, True),
    "is_palindrome-smollm2": (False, True),
    "fizzbuzz-qwen2.5": (True, True),         # cut at "    assert fizzbuzz", which happens to parse
    "second_largest-qwen2.5": (True, True),   # cut inside print("All test cases: the tail is dropped
    "run_length-qwen2.5": (False, True),
    "primes_below-qwen2.5": (True, True),     # cut at "assert primes_below(100) ==": the tail is dropped
}


def test_real_completions_extract_to_parsable_code(model_outputs):
    import ast

    trajs, tasks, records = model_outputs
    assert set(REAL) == {r["id"] for r in records}
    for r in records:
        blocks = [b for b in code_blocks(r["completion"]) if b[0] == "python"]
        truncated, parses = REAL[r["id"]]
        assert (not blocks[-1][2]) == truncated, r["id"]
        code = extract_code(r["completion"])
        name = r["task"]
        assert f"def {name}(" in code, r["id"]
        try:
            ast.parse(code)
            ok = True
        except SyntaxError:
            ok = False
        assert ok == parses, r["id"]
    second = next(r for r in records if r["id"] == "second_largest-qwen2.5")
    unrepaired = extract_code(second["completion"], repair_truncated=False)
    with pytest.raises(SyntaxError):
        ast.parse(unrepaired)
