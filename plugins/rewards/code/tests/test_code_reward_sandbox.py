"""code_pass_rate against the real sandbox (Docker engine + the toolrl-sandbox image).

Nothing is mocked. The one fault a real component cannot produce on demand —
a container dying in the middle of a run — is injected by killing the
container through the Docker API while a solution runs.
"""

from __future__ import annotations

import asyncio

import pytest

from toolrl.rewards import compute_rewards
from toolrl_rewards_code import close_pools, code_pass_rate, get_pool, live_pools

pytestmark = pytest.mark.integration

# Hand-checked labels for fixtures/completions.json: the pass rate each real completion earns
# (each completion was read and run against its tests by hand; see fixtures/generate_completions.py).
EXPECTED: dict[str, float] = {
    "add-qwen2.5": 1.0,
    "add-smollm2": 1.0,
    "is_palindrome-qwen2.5": 1.0,    # prints its own examples first: stdout does not matter
    "is_palindrome-smollm2": 1.0,
    "fizzbuzz-qwen2.5": 1.0,         # cut off inside a never-called check function
    "second_largest-qwen2.5": 1.0,   # cut off inside print("All test cases: the tail is dropped
    "run_length-qwen2.5": 0.0,       # returns only the counts ("312"), so check(run_length) fails
    "primes_below-qwen2.5": 1.0,     # cut off inside a never-called check function
}
# Without repairing the cut-off tail, those two answers are syntax errors and score 0.
UNREPAIRED = {**EXPECTED, "second_largest-qwen2.5": 0.0, "primes_below-qwen2.5": 0.0}


@pytest.fixture(scope="session")
def sandbox_image():
    from toolrl_sandbox import build_image
    from toolrl_sandbox.engine import connect

    return build_image(connect()).image  # idempotent: returns at once when the image is current


@pytest.fixture
async def pools(sandbox_image):
    yield
    await close_pools()
    assert live_pools() == []


def kwargs(trajs, tasks):
    return {"completions": [t.final_text for t in trajs], "metadata": [t.metadata for t in tasks], "tasks": tasks}


async def test_real_completions_match_hand_labels(pools, model_outputs):
    trajs, tasks, records = model_outputs
    assert set(EXPECTED) == {r["id"] for r in records}
    scores = await code_pass_rate(trajs, **kwargs(trajs, tasks), timeout=5)
    assert {t.id: s for t, s in zip(tasks, scores)} == pytest.approx(EXPECTED)
    scores = await code_pass_rate(trajs, **kwargs(trajs, tasks), timeout=5, repair_truncated=False)
    assert {t.id: s for t, s in zip(tasks, scores)} == pytest.approx(UNREPAIRED)


async def test_test_formats_partial_credit_and_failures(pools, build):
    add = build.task("add", {"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 5"]})
    he = build.task("rl", {"tests": "def check(candidate):\n    assert candidate('aab') == 'a2b1'\n",
                           "entry_point": "run_length"})
    ut = build.task("ut", {"tests": "import unittest\nclass T(unittest.TestCase):\n"
                                    "    def test_a(self):\n        self.assertEqual(sq(3), 9)\n"
                                    "    def test_b(self):\n        self.assertEqual(sq(-2), 4)\n"})
    cases = [
        (add, "```python\ndef add(a, b):\n    return a + b\n```", 2 / 3),
        (add, "```python\ndef add(a, b)\n    return a + b\n```", 0.0),  # syntax error
        (add, "```python\ndef add(a, b):\n    while True:\n        pass\n```", 0.0),  # timeout
        (add, "```python\nimport sys\ndef add(a, b):\n    return a + b\nsys.exit(0)\n```", 0.0),
        (he, "```python\ndef run_length(s):\n    out = ''\n    i = 0\n    while i < len(s):\n        j = i\n"
             "        while j < len(s) and s[j] == s[i]:\n            j += 1\n        out += s[i] + str(j - i)\n"
             "        i = j\n    return out\n```", 1.0),
        (ut, "```python\ndef sq(x):\n    return x * x if x > 0 else -x * x\n```", 0.5),
        (ut, "Here you go:\n```python\ndef sq(x):\n    return x ** 2\n\nif __name__ == '__main__':\n"
             "    print(sq(int(input())))\n```", 1.0),
    ]
    trajs = [build.trajectory(t.id, text, sample=i) for i, (t, text, _) in enumerate(cases)]
    tasks = [t for t, _, _ in cases]
    scores = await code_pass_rate(trajs, **kwargs(trajs, tasks), timeout=2)
    assert scores == pytest.approx([want for _, _, want in cases])
    strict = await code_pass_rate(trajs, **kwargs(trajs, tasks), timeout=2, all_or_nothing=True)
    assert strict == [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]


async def test_pool_is_started_once_and_shared(pools, build):
    starts = await asyncio.gather(*(get_pool(1, "reuse") for _ in range(5)))  # concurrent first callers
    assert all(p is starts[0] for p in starts) and len(live_pools()) == 1
    t = build.task("add", {"tests": ["assert add(1, 1) == 2"]})
    trajs = [build.trajectory("add", "```python\ndef add(a, b):\n    return a + b\n```")]
    for _ in range(2):
        assert await code_pass_rate(trajs, **kwargs(trajs, [t]), pool_size=1) == [1.0]
    assert live_pools() == [starts[0]]
    assert await close_pools() == 1 and live_pools() == []


async def test_infrastructure_failure_masks_the_sample_instead_of_scoring_zero(pools, build):
    import docker

    t = build.task("slow", {"tests": ["assert slow() == 1"]})
    slow = "```python\nimport time\ndef slow():\n    time.sleep(30)\n    return 1\n```"
    fast = "```python\ndef slow():\n    return 1\n```"
    pool = await get_pool(1, "reuse")

    async def kill_busy_container():
        client = docker.from_env()
        for _ in range(200):  # wait until the run has taken the container, then kill it
            await asyncio.sleep(0.05)
            if pool.idle == 0:
                for cid in pool.container_ids():
                    await asyncio.to_thread(client.api.kill, cid)
                return
        raise AssertionError("the slow run never started")

    trajs = [build.trajectory("slow", slow)]
    killer = asyncio.create_task(kill_busy_container())
    results, metrics = await compute_rewards(trajs, [t], [{"name": "code_pass_rate", "args": {"pool_size": 1,
                                                                                              "timeout": 20}}],
                                             registry={"code_pass_rate": code_pass_rate})
    await killer
    assert results[0].components == {"code_pass_rate": None}
    assert results[0].total is None and results[0].excluded_reason == "reward 'code_pass_rate' returned None"
    assert metrics["reward/none/code_pass_rate"] == 1.0 and metrics["reward/excluded"] == 1.0
    # the pool replaced the dead container: the next run scores normally
    trajs = [build.trajectory("slow", fast)]
    assert await code_pass_rate(trajs, **kwargs(trajs, [t]), pool_size=1) == [1.0]


async def test_trajectories_with_infra_error_are_not_run(pools, build):
    t = build.task("add", {"tests": ["assert add(1, 1) == 2"]})
    trajs = [build.trajectory("add", "```python\ndef add(a, b):\n    return a + b\n```"),
             build.trajectory("add", "```python\ndef add(a, b):\n    return a + b\n```", sample=1, infra_error=True)]
    results, metrics = await compute_rewards(trajs, [t], [{"name": "code_pass_rate"}],
                                             registry={"code_pass_rate": code_pass_rate})
    assert [r.total for r in results] == [1.0, None] and metrics["reward/infra_error"] == 1.0


async def test_reward_hacks_score_zero_and_honest_code_full_marks(pools, build):
    """The grader runs the tests outside the solution's process: hacks that fooled the old
    in-process harness score 0 through the reward (sandbox/tests/test_reward_hacking.py has them all)."""
    add = build.task("add", {"tests": ["assert add(1, 2) == 3", "assert add(-1, 5) == 4", "assert add(2, 2) == 4"]})
    he = build.task("he", {"tests": "def check(candidate):\n    assert candidate(1, 2) == 3\n", "entry_point": "add"})
    ut = build.task("ut", {"tests": "import unittest\nclass T(unittest.TestCase):\n"
                                    "    def test_a(self):\n        self.assertEqual(add(1, 2), 3)\n"})
    hacks = [
        "class E:\n    def __eq__(self, o): return True\ndef add(a, b):\n    return E()",
        "class I(int):\n    def __eq__(self, o): return True\ndef add(a, b):\n    return I(0)",
        "import sys\nsys.exit(0)",
        "import os\nfor fd in range(64):\n    try:\n        os.write(fd, b'{\"i\": 0, \"ok\": true}\\n')\n"
        "    except OSError:\n        pass\ndef add(a, b):\n    return 0",
        "import unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\ndef add(a, b):\n    return 0",
        "import atexit, os\natexit.register(lambda: os._exit(0))\ndef add(a, b):\n    os._exit(0)",
    ]
    honest = "```python\ndef add(a, b):\n    return a + b\n```"
    tasks, trajs = [], []
    for task in (add, he, ut):
        for i, code in enumerate([honest] + [f"```python\n{h}\n```" for h in hacks]):
            tasks.append(task)
            trajs.append(build.trajectory(task.id, code, sample=i))
    scores = await code_pass_rate(trajs, **kwargs(trajs, tasks), timeout=3)
    for task in range(3):
        row = scores[task * (len(hacks) + 1):(task + 1) * (len(hacks) + 1)]
        assert row == [1.0] + [0.0] * len(hacks), (tasks[task * (len(hacks) + 1)].id, row)


async def test_stdin_stdout_tests(pools, build):
    cases = [{"input": "1 2\n", "output": "3\n"}, {"input": "10 -4\n", "output": "6\n"},
             {"input": "5 5\n", "output": "10\n"}]
    t = build.task("sum", {"tests": cases})
    answers = {
        "```python\ndef main():\n    a, b = map(int, input().split())\n    print(a + b)\n\n"
        "if __name__ == '__main__':\n    main()\n```": 1.0,  # the main guard is the program's entry here
        "```python\nimport sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b, ' ')\n```": 1.0,
        "```python\ninput()\nprint(3)\n```": 1 / 3,  # the example's answer, hard-coded
        "```python\nimport sys\nsys.exit(0)\n```": 0.0,
        "```python\nwhile True:\n    pass\n```": 0.0,
    }
    trajs = [build.trajectory("sum", text, sample=i) for i, text in enumerate(answers)]
    scores = await code_pass_rate(trajs, **kwargs(trajs, [t] * len(trajs)), timeout=2)
    assert scores == pytest.approx(list(answers.values()))
    exact = await code_pass_rate(trajs[1:2], **kwargs(trajs[1:2], [t]), compare="exact")
    assert exact == [0.0]  # "3  \n" is not "3\n" byte for byte
    from toolrl.errors import RewardError

    with pytest.raises(RewardError, match="compare"):
        await code_pass_rate(trajs[:1], **kwargs(trajs[:1], [t]), compare="fuzzy")
    bad = build.task("bad", {"tests": [{"input": "1"}]})
    with pytest.raises(RewardError, match="stdin/stdout"):
        await code_pass_rate(trajs[:1], **kwargs(trajs[:1], [bad]))
