"""Image building: cache, hash label, both build paths, bounded base probing."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
import time

import docker
import pytest

from toolrl_sandbox import SyncSandboxPool, __version__, image as image_mod, rootfs
from toolrl_sandbox.image import LABEL_HASH, LABEL_METHOD, build_image, content_hash


def test_build_is_cached(client: docker.DockerClient, image: str) -> None:
    t0 = time.monotonic()
    report = build_image(client)
    assert report.cached and time.monotonic() - t0 < 5
    assert report.image == f"toolrl-sandbox:{__version__}" == image
    labels = client.images.get(image).labels
    assert labels[LABEL_HASH] == content_hash()
    assert labels[LABEL_METHOD] in ("offline", "dockerfile")
    assert "up to date" in report.describe()


def test_image_is_small(client: docker.DockerClient, image: str) -> None:
    assert client.images.get(image).attrs["Size"] < 200e6


def test_dockerfile_path_builds_a_working_image(client: docker.DockerClient, image: str) -> None:
    """The Dockerfile path, for real, with a local stand-in for python:3.12-slim
    (no registry here): the offline base plays the part of the base image."""
    base = "toolrl-sandbox-test-base:latest"
    target = f"toolrl-sandbox-dockerfile-test:{__version__}"
    client.images.get(rootfs.base_tag()).tag(base)
    try:
        report = build_image(client, image=target, method="auto", base=base, force=True)
        assert (report.method, report.cached) == ("dockerfile", False)
        assert client.images.get(target).labels[LABEL_METHOD] == "dockerfile"
        with SyncSandboxPool(size=1, image=target) as pool:
            assert pool.run("print('from the dockerfile image')").stdout == "from the dockerfile image\n"
        again = build_image(client, image=target, method="auto", base=base)
        assert again.cached
    finally:
        for name in (target, base):
            try:
                client.images.remove(name)
            except docker.errors.ImageNotFound:
                pass


class _HangingImages:
    """A client whose pull never returns: probing must give up on time."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def get(self, name: str) -> None:
        raise docker.errors.ImageNotFound(name)

    def pull(self, repo: str, tag: str) -> None:
        self.release.wait(30)


class _FakeClient:
    def __init__(self) -> None:
        self.images = _HangingImages()


def test_base_probe_gives_up_quickly() -> None:
    fake = _FakeClient()
    t0 = time.monotonic()
    assert image_mod._base_available(fake, "python:3.12-slim", pull_timeout=1.0) is False  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 2.0
    fake.images.release.set()


def test_mirror_and_suite_come_from_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    suite = rootfs.host_suite()
    assert suite and rootfs.host_mirror(suite).startswith(("http://", "https://", "file:/"))
    monkeypatch.setenv("TOOLRL_SANDBOX_MIRROR", "http://mirror.invalid/debian")
    assert rootfs.host_mirror(suite) == "http://mirror.invalid/debian"


def test_package_does_not_import_toolrl() -> None:
    code = ("import sys, toolrl_sandbox, toolrl_sandbox.cli, toolrl_sandbox.bench; "
            "bad = [m for m in sys.modules if m == 'toolrl' or m.startswith('toolrl.')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_executor_is_stdlib_only() -> None:
    tree = ast.parse(image_mod._asset("executor.py"))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    names |= set(ast.literal_eval(next(n.value for n in tree.body if isinstance(n, ast.Assign)
                                       and getattr(n.targets[0], "id", "") == "WARM_MODULES")))
    assert names and all(name.split(".")[0] in sys.stdlib_module_names for name in names), names
