"""The python environment against the real sandbox pool (Docker: integration tier)."""

import asyncio

import pytest

from toolrl.env import sandbox_pool_key
from toolrl.errors import ToolrlError
from toolrl.types import Task, ToolCall
from toolrl_env_code.env import clean_traceback, python_env, truncate

pytestmark = pytest.mark.integration

TASK = Task(id="p1", messages=({"role": "user", "content": "compute"},), env="python")


async def _env(ctx, **args):
    env = python_env(ctx, pool_size=1, **args)
    await env.reset(TASK)
    return env


async def test_runs_code_and_returns_stdout(ctx):
    env = await _env(ctx)
    res = await env.step(ToolCall("python", {"code": "print(1234 * 5678)"}))
    assert res.text == "7006652" and not res.infra_error and res.info["status"] == "ok"
    res = await env.step(ToolCall("python", {"code": "x = 1"}))
    assert "no output" in res.text and "print()" in res.text
    assert env.state() == {"runs": env.state()["runs"], "num_calls": 2, "num_ok": 2, "num_errors": 0}


async def test_user_errors_are_tool_messages(ctx):
    env = await _env(ctx, timeout=1.0, memory_mb=64)
    res = await env.step(ToolCall("python", {"code": "print('before')\n1/0"}))
    assert res.info["status"] == "error" and not res.infra_error
    assert res.text.startswith("before\nstderr:\nTraceback")
    assert "ZeroDivisionError: division by zero" in res.text and "executor.py" not in res.text
    res = await env.step(ToolCall("python", {"code": "while True: pass"}))
    assert res.info["status"] == "timeout" and "[timed out after 1 s]" in res.text
    res = await env.step(ToolCall("python", {"code": "x = bytearray(10**9)"}))
    assert res.info["status"] == "memory" and "limit is 64 MB" in res.text
    res = await env.step(ToolCall("python", {"code": "import sys; sys.exit(3)"}))
    assert res.text == "[exited with code 3]"
    assert env.state()["num_errors"] == 4 and env.state()["num_ok"] == 0


async def test_long_output_is_truncated_with_a_marker(ctx):
    env = await _env(ctx, max_output_chars=300)
    res = await env.step(ToolCall("python", {"code": "print('A' * 5000 + 'END')"}))
    assert len(res.text) <= 300 and res.text.startswith("AAA") and res.text.endswith("END")
    assert "characters truncated]" in res.text


async def test_bad_calls_do_not_reach_the_sandbox(ctx):
    env = await _env(ctx, max_calls=1)
    assert "Unknown tool 'bash'" in (await env.step(ToolCall("bash", {"cmd": "ls"}))).text
    assert 'non-empty "code"' in (await env.step(ToolCall("python", {"source": "print(1)"}))).text
    assert env.state()["num_calls"] == 0
    await env.step(ToolCall("python", {"code": "print(1)"}))
    res = await env.step(ToolCall("python", {"code": "print(2)"}))
    assert "Call limit reached" in res.text and res.info["status"] == "call_limit"


async def test_episodes_share_one_pool_which_closes_with_the_run(ctx, docker_ready):
    envs = [python_env(ctx, pool_size=2) for _ in range(4)]
    await asyncio.gather(*(e.reset(TASK) for e in envs))
    assert len({id(e.pool) for e in envs}) == 1
    pool = envs[0].pool
    results = await asyncio.gather(*(e.step(ToolCall("python", {"code": f"print({i} ** 2)"}))
                                     for i, e in enumerate(envs)))
    assert [r.text for r in results] == ["0", "1", "4", "9"]
    ids = pool.container_ids()
    assert len(ids) == 2
    for e in envs:
        await e.close()
    assert ctx.get(sandbox_pool_key("reuse")) is pool  # closing an episode keeps the pool
    await ctx.aclose()
    await asyncio.sleep(0.5)
    alive = {c.id for c in docker_ready.containers.list(all=True)}
    assert not alive & set(ids)


async def test_a_dead_container_is_an_infra_error(ctx, docker_ready):
    env = await _env(ctx)
    (cid,) = env.pool.container_ids()
    res = await asyncio.gather(
        env.step(ToolCall("python", {"code": "import time; time.sleep(5); print('late')"})),
        asyncio.to_thread(lambda: (__import__("time").sleep(0.5), docker_ready.api.kill(cid))),
    )
    assert res[0].infra_error and res[0].info["status"] == "infra_error"
    assert env.state()["runs"][-1]["status"] == "infra_error"
    # the pool replaces the container; the next call works
    ok = await env.step(ToolCall("python", {"code": "print('back')"}))
    assert ok.text == "back" and not ok.infra_error


def test_bad_arguments_name_the_key():
    with pytest.raises(ToolrlError, match="mode='warm'") as exc:
        python_env(None, mode="warm")
    assert "envs.python" in exc.value.where
    with pytest.raises(ToolrlError, match="unknown argument"):
        python_env(None, pool=3)


def test_truncate_and_clean_traceback():
    assert truncate("short", 100) == "short"
    cut = truncate("x" * 1000, 200)
    assert len(cut) <= 200 and "truncated" in cut
    tb = ('Traceback (most recent call last):\n  File "/opt/toolrl_sandbox/executor.py", line 319, in _child\n'
          '    exec(compile(source, filename, "exec"), main.__dict__)\n  File "<snippet>", line 1, in <module>\n'
          '    1/0\nZeroDivisionError: division by zero\n')
    assert clean_traceback(tb) == ('Traceback (most recent call last):\n  File "<snippet>", line 1, in <module>\n'
                                   '    1/0\nZeroDivisionError: division by zero\n')
