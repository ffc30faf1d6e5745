"""`code_pass_rate`: run the model's code against the task's tests in the sandbox."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from toolrl.errors import RewardError

from toolrl_rewards_code.extract import extract_code
from toolrl_rewards_code.pools import get_pool

logger = logging.getLogger(__name__)


async def code_pass_rate(
    trajectories: Sequence[Any],
    *,
    completions: Sequence[str],
    metadata: Sequence[Mapping[str, Any]],
    tasks: Sequence[Any],
    pool_size: int = 2,
    mode: str = "reuse",
    timeout: float = 10.0,
    memory_mb: int = 256,
    all_or_nothing: bool = False,
    blocks: str = "all",
    repair_truncated: bool = True,
    tests_key: str = "tests",
    entry_point_key: str = "entry_point",
    compare: str = "lines",
) -> list[float | None]:
    """The fraction of the task's tests that the model's code passes, run in the toolrl sandbox.

    The code is the final answer's ```` ```python ```` block(s) (see
    `toolrl_rewards_code.extract_code`: all Python blocks joined, `if __name__ ==
    "__main__":` demos removed; an answer cut off by the token limit inside its code
    block loses its unparsable last lines). The tests are `metadata["tests"]` in any form
    `SandboxPool.run_tests` accepts: a list of assert statements (each one test), or
    one source string — HumanEval style with `metadata["entry_point"]` naming the
    function its `check(candidate)` receives, `unittest.TestCase` classes, or a
    plain script. When the sandbox itself fails (`status == "infra_error"`: a
    container died, the engine errored) the sample is masked with None instead of
    scored 0 — the model did nothing wrong. A timeout, a crash or too much memory is
    the code's fault and scores the tests passed before it.

    The sandbox pool is started on first use and shared by every later call in the
    process (one per event loop and `pool_size`/`mode`); it is closed at exit, or by
    `await toolrl_rewards_code.close_pools()`.

    Args:
        trajectories: the batch (toolrl passes it positionally).
        completions: the final assistant message of each trajectory (passed by toolrl).
        metadata: each task's metadata with the tests (passed by toolrl).
        tasks: each trajectory's task, to name it in errors (passed by toolrl).
        pool_size: containers kept warm (runs beyond that wait in the pool's queue).
        mode: `"reuse"` (a container is reset between runs; fast) or `"fresh"` (a new container per run).
        timeout: seconds one solution + its tests may run.
        memory_mb: address-space limit of the solution's process.
        all_or_nothing: 1.0 only when every test passes, else 0.0 (instead of the fraction).
        blocks: `"all"` joins every Python block of the answer, `"last"` takes the last one.
        repair_truncated: when the answer was cut off inside its last code block and the code
            does not parse, drop trailing lines until it does.
        tests_key: the metadata key of the tests.
        entry_point_key: the metadata key of the HumanEval entry point (used with tests given as one string).
        compare: how stdin/stdout outputs are compared: `"lines"` (trailing whitespace and trailing
            empty lines ignored), `"tokens"` (whitespace-separated tokens) or `"exact"`.

    Returns:
        One value per trajectory: passed / total in [0, 1], 0.0 when the answer has
        no Python block, or None when the sandbox infrastructure failed.

    Example:
        ```yaml
        rewards:
          - {name: code_pass_rate, weight: 1.0, args: {pool_size: 4, timeout: 5}}
        ```
        For a task with `metadata: {tests: ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]}`,
        an answer ```` ```python\\ndef add(a, b):\\n    return a + b\\n``` ```` scores 1.0.
    """
    if int(pool_size) < 1 or mode not in ("reuse", "fresh") or float(timeout) <= 0 or int(memory_mb) < 16 \
            or compare not in ("lines", "tokens", "exact"):
        raise RewardError(
            f"code_pass_rate: bad arguments pool_size={pool_size!r}, mode={mode!r}, timeout={timeout!r}, "
            f"memory_mb={memory_mb!r}, compare={compare!r}",
            where="rewards[].args",
            fix="use pool_size >= 1, mode reuse|fresh, timeout > 0, memory_mb >= 16, compare lines|tokens|exact",
        )
    jobs: list[tuple[str, Any, str | None] | None] = []
    for text, meta, task in zip(completions, metadata, tasks):
        tests, entry_point = _tests_of(meta, task, tests_key, entry_point_key)
        # a stdin/stdout program is run as a script: its `if __name__ == "__main__":` is its entry
        code = extract_code(text, blocks=blocks, repair_truncated=repair_truncated,
                            strip_main_guard=not _is_io(tests))
        jobs.append(None if code is None else (code, tests, entry_point))
    if all(job is None for job in jobs):
        return [0.0] * len(jobs)
    pool = await _run_pool(int(pool_size), mode)
    from toolrl_sandbox import SandboxBusyError as busy

    async def score(job: tuple[str, Any, str | None] | None) -> float | None:
        if job is None:
            return 0.0
        code, tests, entry_point = job
        try:
            report = await pool.run_tests(code, tests, entry_point, timeout=float(timeout), memory_mb=int(memory_mb),
                                          compare=compare)
        except ValueError as exc:  # the harness rejects the test format
            raise RewardError(f"code_pass_rate: the tests cannot be run: {exc}",
                              fix="see the run_tests formats in docs/rewards.md") from exc
        except busy as exc:  # no container free in time: the infrastructure's fault, not the code's
            logger.warning("code_pass_rate: sandbox busy, sample masked: %s", exc)
            return None
        if report.result.status == "infra_error":
            return None
        if all_or_nothing:
            return 1.0 if report.all_passed else 0.0
        return report.fraction

    return list(await asyncio.gather(*(score(job) for job in jobs)))


def _is_io(tests: Any) -> bool:
    return isinstance(tests, list) and bool(tests) and all(isinstance(t, Mapping) for t in tests)


def _tests_of(meta: Mapping[str, Any], task: Any, tests_key: str, entry_key: str) -> tuple[Any, str | None]:
    tests = meta.get(tests_key) if isinstance(meta, Mapping) else None
    listed = isinstance(tests, Sequence) and not isinstance(tests, str) and bool(tests)
    io = listed and all(isinstance(t, Mapping) and isinstance(t.get("input"), str) and isinstance(t.get("output"), str)
                        for t in tests)
    ok = (isinstance(tests, str) and tests.strip()) or io or (listed and all(isinstance(t, str) for t in tests))
    if not ok:
        raise RewardError(
            f"code_pass_rate: the task has no tests in metadata[{tests_key!r}] (got {tests!r})",
            where=f"task {getattr(task, 'id', '?')!r}",
            fix=f'add "metadata": {{"{tests_key}": ["assert f(1) == 2", ...]}} '
                f'(or a HumanEval check() source with "{entry_key}", or stdin/stdout cases '
                f'[{{"input": "1 2\\n", "output": "3\\n"}}, ...])',
        )
    entry = meta.get(entry_key)
    if isinstance(tests, str):
        return tests, (str(entry) if entry else None)
    if io:
        return [{"input": t["input"], "output": t["output"]} for t in tests], None
    return list(tests), None


async def _run_pool(size: int, mode: str) -> Any:
    """On the run's event loop, the run's one sandbox pool (shared with the python env, closed by
    `toolrl.runtime.close()`); on any other loop, this module's pool for that loop (`get_pool`)."""
    from toolrl import runtime

    rt = runtime.current()
    if asyncio.get_running_loop() is rt.loop:
        try:
            return await rt.env.sandbox_pool(size=size, mode=mode, where="rewards: code_pass_rate")
        except Exception as exc:  # the same failure, reported as a reward error with its fix
            raise RewardError(f"code_pass_rate could not start the sandbox pool: {exc}",
                              where="the toolrl-sandbox pool",
                              fix="start the Docker engine and build the image with `toolrl-sandbox build` "
                                  "(`toolrl doctor` checks both)") from exc
    return await get_pool(size, mode)
