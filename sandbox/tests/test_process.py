"""The process backend (`ProcessPool`): real local subprocesses, no Docker, no mocks.

Each test runs real snippets through real `python3 -I` processes and checks the result type and the limits
that the backend promises (timeout, CPU time, address space, output cap, file size, scratch directory,
clean environment). It is not a sandbox, and nothing here claims it is.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time

import pytest

from toolrl_sandbox import ExecResult, PoolClosedError, SandboxError
from toolrl_sandbox.process import ProcessPool


def run(coro):
    return asyncio.run(coro)


async def _one(code: str, **kw) -> ExecResult:
    async with ProcessPool(size=2) as pool:
        return await pool.run(code, **kw)


def test_ok_stdout_stderr_and_exit_codes() -> None:
    r = run(_one("import sys\nprint(6 * 7)\nprint('warn', file=sys.stderr)"))
    assert (r.status, r.stdout, r.stderr, r.exit_code) == ("ok", "42\n", "warn\n", 0)
    assert r.wall_ms > 0
    r = run(_one("import sys\nsys.exit(3)"))
    assert (r.status, r.exit_code) == ("error", 3)


def test_traceback_names_the_snippet_not_the_bootstrap() -> None:
    r = run(_one("x = 1\nraise ValueError('boom')"))
    assert r.status == "error" and r.exit_code == 1
    assert 'File "<snippet>", line 2' in r.stderr and "ValueError: boom" in r.stderr
    assert "raise ValueError('boom')" in r.stderr  # the source line is shown
    assert "BOOT" not in r.stderr and "exec(compile" not in r.stderr


def test_stdin_files_and_scratch_cwd_removed() -> None:
    code = ("import os, sys\nprint(sys.stdin.read().upper())\nprint(open('data/in.txt').read())\n"
            "print(os.getcwd())\nprint(sorted(os.listdir('.')))")
    r = run(_one(code, stdin="hello", files={"data/in.txt": "file content"}))
    assert r.status == "ok", r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "HELLO" and lines[1] == "file content"
    cwd = lines[2]
    assert os.path.basename(cwd).startswith("toolrl-proc-")
    assert lines[3] == "['data']"  # the snippet file was removed before the code ran
    assert not os.path.exists(cwd), "the scratch directory must be deleted after the run"


def test_file_names_must_stay_inside_the_scratch_dir() -> None:
    with pytest.raises(ValueError, match="inside the work directory"):
        run(_one("print(1)", files={"../escape.txt": "x"}))


def test_host_environment_is_not_passed() -> None:
    os.environ["TOOLRL_PROCESS_CANARY"] = "leak-me"
    try:
        r = run(_one("import os\nprint(sorted(k for k in os.environ if 'CANARY' in k))\nprint(os.environ['MINE'])",
                     env={"MINE": "given"}))
    finally:
        del os.environ["TOOLRL_PROCESS_CANARY"]
    assert r.status == "ok", r.stderr
    assert r.stdout.splitlines() == ["[]", "given"]


def test_wall_clock_timeout_kills_the_process_group() -> None:
    code = "import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n" \
           "print('started', flush=True)\ntime.sleep(60)"
    t = time.monotonic()
    r = run(_one(code, timeout=1.0))
    assert r.status == "timeout" and r.stdout == "started\n"
    assert time.monotonic() - t < 10


def test_busy_loop_is_stopped_and_limits_are_set_in_the_child() -> None:
    r = run(_one("while True:\n    pass", timeout=1.0))
    assert r.status == "timeout"
    code = ("import resource as r\nfor n in ('RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_NOFILE', 'RLIMIT_CORE'):\n"
            "    print(n, r.getrlimit(getattr(r, n)))")
    r = run(_one(code, timeout=4.0, memory_mb=200))
    assert r.status == "ok", r.stderr
    assert r.stdout.splitlines() == ["RLIMIT_CPU (5, 6)", f"RLIMIT_AS ({200 << 20}, {200 << 20})",
                                     f"RLIMIT_FSIZE ({32 << 20}, {32 << 20})", "RLIMIT_NOFILE (256, 256)",
                                     "RLIMIT_CORE (0, 0)"]


def test_address_space_limit_gives_memory() -> None:
    r = run(_one("x = bytearray(400 * 1024 * 1024)\nprint(len(x))", memory_mb=128))
    assert r.status == "memory", (r.status, r.stderr)
    assert "MemoryError" in r.stderr


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_output_cap() -> None:
    r = run(_one("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", max_output=10_000, timeout=5.0))
    assert r.status == "output_limit"
    assert len(r.stdout) == 10_000
    gc.collect()  # a pipe left open by the run would be closed here, after its loop, and raise (unraisable)


def test_file_size_limit() -> None:
    r = run(_one("open('big', 'wb').write(b'0' * (40 << 20))"))  # the default limit is 32 MiB
    assert r.status == "error", r
    assert r.exit_code != 0


def test_no_core_dump_and_signal_exit_code() -> None:
    r = run(_one("import os, signal, resource\nprint(resource.getrlimit(resource.RLIMIT_CORE), flush=True)\n"
                 "os.kill(os.getpid(), signal.SIGSEGV)"))
    assert r.stdout == "(0, 0)\n"
    assert r.status == "error" and r.exit_code == -11


def test_concurrency_is_bounded_by_size_and_runs_overlap() -> None:
    async def go() -> tuple[list[ExecResult], float]:
        async with ProcessPool(size=4) as pool:
            t = time.monotonic()
            res = await asyncio.gather(*(pool.run("import time\ntime.sleep(0.5)\nprint('done')") for _ in range(8)))
            return list(res), time.monotonic() - t

    res, wall = run(go())
    assert all(r.status == "ok" and r.stdout == "done\n" for r in res)
    assert 0.9 < wall < 4.0, wall  # 8 runs of 0.5 s, 4 at a time: two waves, not eight


def test_closed_pool_refuses_and_warning_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        pool = ProcessPool(size=1)
        with caplog.at_level(logging.WARNING, logger="toolrl_sandbox.process"):
            await pool.start()
        await pool.close()
        with pytest.raises(PoolClosedError):
            await pool.run("print(1)")

    run(go())
    assert any("NOT a security boundary" in r.getMessage() for r in caplog.records)


def test_bad_interpreter_is_reported() -> None:
    with pytest.raises(SandboxError, match="not an executable file"):
        run(ProcessPool(size=1, python="/nonexistent/python3").start())


def test_io_tests_graded_and_function_tests_refused() -> None:
    async def go():
        async with ProcessPool(size=2) as pool:
            rep = await pool.run_tests("print(int(input()) * 2)", [{"input": "2\n", "output": "4\n"},
                                                                   {"input": "5\n", "output": "11\n"}])
            with pytest.raises(SandboxError, match="stdin/stdout tests"):
                await pool.run_tests("def f(x):\n    return x", "assert f(1) == 1", entry_point="f")
            return rep

    rep = run(go())
    assert (rep.passed, rep.total) == (1, 2)
