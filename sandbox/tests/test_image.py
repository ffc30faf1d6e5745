"""Image building: cache, hash label, both build paths, bounded base probing."""

from __future__ import annotations

import time

import docker
import pytest

from toolrl_sandbox import SyncSandboxPool, __version__, rootfs
from toolrl_sandbox.image import LABEL_HASH, LABEL_METHOD, build_image, content_hash

pytestmark = pytest.mark.integration


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
