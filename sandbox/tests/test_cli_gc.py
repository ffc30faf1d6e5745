"""CLI commands, gc of orphaned containers, and clean-up on signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import docker
import pytest

from toolrl_sandbox import gc as sandbox_gc
from toolrl_sandbox.engine import (
    LABEL_PID,
    LABEL_POOL,
    ContainerLimits,
    create_container,
    create_spec,
    list_labelled,
    owner_labels,
    wait_gone,
)

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "toolrl_sandbox.cli"]


def test_cli_run(tmp_path: Path, image: str) -> None:
    script = tmp_path / "snippet.py"
    script.write_text("import sys\nprint('from file', sum(range(10)))\nprint('warn', file=sys.stderr)\n")
    proc = subprocess.run(CLI + ["run", str(script), "--timeout", "3"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "from file 45\n"
    assert "warn" in proc.stderr and "status=ok" in proc.stderr


def test_cli_run_timeout_and_json(tmp_path: Path, image: str) -> None:
    script = tmp_path / "loop.py"
    script.write_text("while True:\n    pass\n")
    proc = subprocess.run(CLI + ["run", str(script), "--timeout", "0.5", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and '"status": "timeout"' in proc.stdout


def test_cli_build_is_a_cached_noop(image: str) -> None:
    proc = subprocess.run(CLI + ["build"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "up to date" in proc.stdout, proc.stdout + proc.stderr


def test_cli_help_lists_commands() -> None:
    out = subprocess.run(CLI + ["--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("build", "run", "bench", "gc"):
        assert cmd in out


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _orphan(client: docker.DockerClient, image: str, pool_id: str, pid: int) -> str:
    labels = owner_labels(pool_id, "reuse")
    labels[LABEL_PID] = str(pid)
    spec = create_spec(client, image, labels, ContainerLimits())
    cid = create_container(client, spec)
    client.api.start(cid)
    return cid


def test_gc_removes_orphans_only(client: docker.DockerClient, image: str) -> None:
    orphan = _orphan(client, image, "gc-test-orphan", _dead_pid())
    owned = _orphan(client, image, "gc-test-owned", os.getpid())
    try:
        report = sandbox_gc.collect(client)
        assert orphan in report.removed and owned in report.kept
        assert wait_gone(client, "gc-test-orphan", timeout=5)
        assert list_labelled(client, **{LABEL_POOL: "gc-test-owned"})
        # --all limited to one pool: another test process's pools on this engine are left alone
        report = sandbox_gc.collect(client, all_containers=True, pool_id="gc-test-owned")
        assert report.removed == (owned,)
        assert wait_gone(client, "gc-test-owned", timeout=5)
    finally:
        for cid in (orphan, owned):
            try:
                client.api.remove_container(cid, force=True)
            except docker.errors.APIError:
                pass  # already gone, as it should be


def test_cli_gc(client: docker.DockerClient, image: str) -> None:
    _orphan(client, image, "gc-test-cli", _dead_pid())
    proc = subprocess.run(CLI + ["gc"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "removed" in proc.stdout
    assert wait_gone(client, "gc-test-cli", timeout=5)


def test_cli_gc_all_of_one_pool_removes_its_owned_containers_only(client: docker.DockerClient, image: str) -> None:
    mine = _orphan(client, image, "gc-test-cli-pool", os.getpid())
    other = _orphan(client, image, "gc-test-cli-other", os.getpid())
    try:
        proc = subprocess.run(CLI + ["gc", "--all", "--pool", "gc-test-cli-pool"], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0 and "removed 1 sandbox container(s)" in proc.stdout, proc.stdout + proc.stderr
        assert wait_gone(client, "gc-test-cli-pool", timeout=5)
        assert [c["Id"] for c in list_labelled(client, **{LABEL_POOL: "gc-test-cli-other"})] == [other]
    finally:
        for cid in (mine, other):
            try:
                client.api.remove_container(cid, force=True)
            except docker.errors.APIError:
                pass  # already gone


OWNER = textwrap.dedent("""
    import asyncio, sys
    from toolrl_sandbox import SandboxPool

    async def main():
        async with SandboxPool(size=2, image=sys.argv[1]) as pool:
            r = await pool.run("print('up')")
            print(pool.pool_id, r.stdout.strip(), flush=True)
            await asyncio.sleep(60)

    asyncio.run(main())
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_containers_go_away_when_the_owner_is_signalled(client: docker.DockerClient, image: str,
                                                         sig: signal.Signals) -> None:
    # The owner starts with SIGINT at its default, as in a terminal. A test run started as a background job of
    # a non-interactive shell (`pytest ... &`) has SIGINT ignored, children inherit that, and then Python never
    # raises KeyboardInterrupt: an ignored Ctrl-C is the user's choice, not something the pool should override.
    proc = subprocess.Popen([sys.executable, "-c", OWNER, image], stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline().split() if proc.stdout else []
        assert len(line) == 2 and line[1] == "up", line
        pool_id = line[0]
        assert len(list_labelled(client, **{LABEL_POOL: pool_id})) == 2
        proc.send_signal(sig)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # SIGTERM/SIGINT: the pool removes them; SIGKILL: stdin closes, the
    # executors exit and AutoRemove deletes the containers.
    assert wait_gone(client, pool_id, timeout=15), f"containers of {pool_id} survived {sig.name}"


def test_engine_down_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from toolrl_sandbox import EngineUnavailableError
    from toolrl_sandbox.engine import connect

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(EngineUnavailableError, match="ensure_docker.sh"):
        connect(timeout=2)


def test_ensure_docker_script_is_idempotent() -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "ensure_docker.sh"
    for _ in range(2):
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "docker engine is up" in proc.stderr, proc.stderr


def test_remove_containers_works_at_interpreter_shutdown(client, image) -> None:
    """atexit clean-up runs after concurrent.futures refuses new threads: removal goes one by one."""
    import concurrent.futures.thread as cft

    from toolrl_sandbox import SyncSandboxPool
    from toolrl_sandbox.engine import remove_containers

    pool = SyncSandboxPool(2, image=image)
    pool.start()
    try:
        ids = pool.pool.container_ids()
        assert len(ids) == 2
        cft._shutdown = True  # what the interpreter sets before atexit handlers run
        try:
            assert remove_containers(client, ids) == 2
        finally:
            cft._shutdown = False
        assert wait_gone(client, pool.pool.pool_id, timeout=10.0)
    finally:
        pool.close()
