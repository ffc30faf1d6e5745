"""Shared fixtures: the image (built once, idempotently) and small pools.

Every test here runs against the real Docker engine; nothing is mocked or
skipped.  If the engine is down the fixtures fail with the message that says
how to start it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import docker
import pytest

from toolrl_sandbox import SyncSandboxPool, build_image
from toolrl_sandbox.engine import LABEL_POOL, connect, list_labelled, wait_gone

# A host environment variable that must never show up inside a sandbox.
CANARY = f"toolrl-canary-{uuid.uuid4().hex}"
os.environ["TOOLRL_SANDBOX_TEST_CANARY"] = CANARY


@pytest.fixture(scope="session")
def client() -> docker.DockerClient:
    return connect()


@pytest.fixture(scope="session")
def image(client: docker.DockerClient) -> str:
    report = build_image(client)
    return report.image


def _assert_no_leftovers(client: docker.DockerClient, pool_id: str) -> None:
    assert wait_gone(client, pool_id, timeout=10.0), \
        f"containers of pool {pool_id} left behind: {list_labelled(client, **{LABEL_POOL: pool_id})}"


def _pool(client: docker.DockerClient, image: str, **kwargs: object) -> Iterator[SyncSandboxPool]:
    pool = SyncSandboxPool(image=image, **kwargs)
    pool.start()
    assert pool.pool is not None
    pool_id = pool.pool.pool_id
    try:
        yield pool
    finally:
        pool.close()
        _assert_no_leftovers(client, pool_id)


@pytest.fixture(scope="session")
def reuse_pool(client: docker.DockerClient, image: str) -> Iterator[SyncSandboxPool]:
    """Two containers, reused."""
    yield from _pool(client, image, size=2, mode="reuse")


@pytest.fixture(scope="session")
def single_pool(client: docker.DockerClient, image: str) -> Iterator[SyncSandboxPool]:
    """One reused container: consecutive runs are guaranteed to share it."""
    yield from _pool(client, image, size=1, mode="reuse")


@pytest.fixture(scope="session")
def fresh_pool(client: docker.DockerClient, image: str) -> Iterator[SyncSandboxPool]:
    """Two pre-started containers, each used once."""
    yield from _pool(client, image, size=2, mode="fresh")


@pytest.fixture(params=["reuse", "fresh"])
def any_pool(request: pytest.FixtureRequest) -> SyncSandboxPool:
    name = "single_pool" if request.param == "reuse" else "fresh_pool"
    return request.getfixturevalue(name)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Nothing labelled by this test process may survive the session."""
    try:
        client = docker.from_env()
        mine = [c for c in list_labelled(client, **{"toolrl-sandbox.pid": str(os.getpid())})]
    except docker.errors.DockerException:
        return
    if mine:
        session.exitstatus = 1
        print(f"\nERROR: {len(mine)} sandbox container(s) left behind by the tests")
