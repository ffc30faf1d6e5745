"""The run's sandbox pool with `envs.sandbox.backend: process`: the python env runs real local processes.

No Docker here: the `process` backend (toolrl_sandbox.process.ProcessPool) is for throwaway machines without
it (a rented GPU box). These tests run the real python environment and the real pool selection.
"""

from __future__ import annotations

import asyncio

import pytest

from toolrl.env import EnvContext, sandbox_pool_key
from toolrl.errors import ToolrlError
from toolrl.types import Task, ToolCall

pytest.importorskip("toolrl_sandbox")
pytest.importorskip("toolrl_env_code")

TASK = Task(id="p1", messages=({"role": "user", "content": "compute"},), env="python")


def test_config_selects_the_process_pool_and_the_python_env_runs_code() -> None:
    from toolrl_env_code.env import python_env
    from toolrl_sandbox.process import ProcessPool

    async def go():
        ctx = EnvContext({"sandbox": {"backend": "process"}, "python": {"pool_size": 2}})
        env = python_env(ctx, pool_size=2, timeout=2.0, memory_mb=128)
        await env.reset(TASK)
        ok = await env.step(ToolCall("python", {"code": "print(1234 * 5678)"}))
        err = await env.step(ToolCall("python", {"code": "print('before')\n1/0"}))
        slow = await env.step(ToolCall("python", {"code": "while True: pass"}))
        pool = ctx.get(sandbox_pool_key("process"))
        await env.close()
        await ctx.aclose()
        return ok, err, slow, pool

    ok, err, slow, pool = asyncio.run(go())
    assert isinstance(pool, ProcessPool) and pool.size == 2
    assert ok.text == "7006652" and ok.info["status"] == "ok" and not ok.infra_error
    assert err.info["status"] == "error" and err.text.startswith("before\nstderr:\nTraceback")
    assert "ZeroDivisionError" in err.text and "toolrl_snippet" not in err.text
    assert slow.info["status"] == "timeout" and "[timed out after 2 s]" in slow.text


def test_environment_variable_selects_it_and_unknown_backends_are_refused(monkeypatch) -> None:
    monkeypatch.setenv("TOOLRL_SANDBOX_BACKEND", "process")
    assert EnvContext({}).sandbox_backend() == "process"
    assert EnvContext({"sandbox": {"backend": "docker"}}).sandbox_backend() == "docker"  # config wins
    monkeypatch.delenv("TOOLRL_SANDBOX_BACKEND")
    assert EnvContext({}).sandbox_backend() == "docker"
    with pytest.raises(ToolrlError, match="unknown sandbox backend 'chroot'"):
        EnvContext({"sandbox": {"backend": "chroot"}}).sandbox_backend()


def test_a_missing_dependency_of_the_sandbox_package_is_named(monkeypatch) -> None:
    """On the GPU machine (2026-12-05) toolrl_sandbox was on the path but its `docker` dependency was not; the
    error said the distribution was not installed. Now it names the missing module (injected here: `docker`
    made unimportable, toolrl_sandbox imported afresh)."""
    import sys

    ours = [m for m in sys.modules if m == "toolrl_sandbox" or m.startswith("toolrl_sandbox.")]
    for name in ours:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "docker", None)  # `import docker` now raises ImportError(name="docker")

    async def go():
        ctx = EnvContext({"sandbox": {"backend": "process"}})
        try:
            await ctx.sandbox_pool(size=1, where="envs.python")
        finally:
            await ctx.aclose()

    try:
        with pytest.raises(ToolrlError) as err:
            asyncio.run(go())
    finally:  # modules the failed import left behind go, so the originals come back whole
        for name in [m for m in sys.modules if m.startswith("toolrl_sandbox") and m not in ours]:
            del sys.modules[name]
    text = str(err.value)
    assert text.startswith("envs.python: toolrl_sandbox cannot be imported: ") and "docker" in text
    assert "install the missing dependency (docker)" in text and "not installed" not in text.split("Fix")[0]
