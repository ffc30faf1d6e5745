"""The sandbox image ``toolrl-sandbox:<version>``: naming, caching and building.

Two real paths end in the same Dockerfile (``Dockerfile`` beside this file):

* ``dockerfile``: ``FROM python:3.12-slim``, taken when that image is present
  locally or can be pulled (the pull is bounded in time).
* ``offline``: ``FROM`` a minimal Debian root file system that debootstrap
  makes from the host's own package mirror and ``docker import`` loads
  (see ``rootfs.py``); no container registry involved.

The image carries a label with a hash of the executor, the Dockerfile and the
offline recipe, so building is idempotent and a changed executor rebuilds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import docker
import docker.errors

from . import __version__, rootfs
from .errors import ImageBuildError, ImageMissingError

log = logging.getLogger(__name__)

REPOSITORY = "toolrl-sandbox"
DEFAULT_BASE = "python:3.12-slim"
LABEL_HASH = "toolrl-sandbox.executor-hash"
LABEL_VERSION = "toolrl-sandbox.version"
LABEL_METHOD = "toolrl-sandbox.build-method"
Method = Literal["auto", "dockerfile", "offline"]


def default_image() -> str:
    return os.environ.get("TOOLRL_SANDBOX_IMAGE", f"{REPOSITORY}:{__version__}")


def image_tag() -> str:
    """Alias of :func:`default_image` (the tag ``toolrl doctor`` checks)."""
    return default_image()


def _asset(name: str) -> bytes:
    return resources.files("toolrl_sandbox").joinpath(name).read_bytes()


EXECUTOR_FILES = ("executor.py", "capture.py", "grading.py", "grade_run.py", "seccomp.py")
"""The in-container program: the executor and its stdlib-only siblings, copied to /opt/toolrl_sandbox/."""


def content_hash() -> str:
    """Hash of everything that goes into the image."""
    digest = hashlib.sha256()
    for part in (*(_asset(name) for name in EXECUTOR_FILES), _asset("Dockerfile"), rootfs.RECIPE.encode(),
                 __version__.encode()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class BuildReport:
    image: str
    method: str
    cached: bool
    seconds: float
    size_bytes: int

    def describe(self) -> str:
        size = f"{self.size_bytes / 1e6:.1f} MB"
        if self.cached:
            return f"{self.image} is up to date ({self.method} build, {size}); nothing to do"
        return f"built {self.image} via the {self.method} path in {self.seconds:.1f} s; image size {size}"


def image_is_current(client: docker.DockerClient, image: str) -> docker.models.images.Image | None:
    try:
        img = client.images.get(image)
    except docker.errors.ImageNotFound:
        return None
    if (img.labels or {}).get(LABEL_HASH) != content_hash():
        return None
    return img


def require_image(client: docker.DockerClient, image: str) -> None:
    """Raise :class:`ImageMissingError` unless ``image`` exists and matches this executor."""
    try:
        img = client.images.get(image)
    except docker.errors.ImageNotFound:
        raise ImageMissingError(image) from None
    if image == default_image() and (img.labels or {}).get(LABEL_HASH) != content_hash():
        raise ImageMissingError(image + " (built from another executor version)")


def _base_available(client: docker.DockerClient, base: str, pull_timeout: float) -> bool:
    """True if ``base`` is local or could be pulled within ``pull_timeout`` seconds."""
    try:
        client.images.get(base)
        return True
    except docker.errors.ImageNotFound:
        pass
    outcome: list[bool] = []

    def pull() -> None:
        try:
            repo, _, tag = base.partition(":")
            client.images.pull(repo, tag=tag or "latest")
            outcome.append(True)
        except Exception as exc:  # noqa: BLE001 - any failure means "not pullable"
            log.info("cannot pull %s: %s", base, str(exc).splitlines()[0][:200])
            outcome.append(False)

    worker = threading.Thread(target=pull, daemon=True, name="toolrl-sandbox-pull")
    worker.start()
    worker.join(pull_timeout)
    if worker.is_alive():
        log.info("pulling %s did not finish within %.0f s; using the offline build", base, pull_timeout)
        return False
    return outcome[0]


def _docker_build(client: docker.DockerClient, base: str, image: str, labels: dict[str, str]) -> None:
    ctx = tempfile.mkdtemp(prefix="toolrl-sandbox-ctx-")
    try:
        for name in ("Dockerfile", *EXECUTOR_FILES):
            with open(os.path.join(ctx, name), "wb") as fh:
                fh.write(_asset(name))
        stream = client.api.build(path=ctx, tag=image, buildargs={"BASE": base}, labels=labels,
                                  rm=True, forcerm=True, pull=False, decode=True)
        for chunk in stream:
            if "error" in chunk:
                raise ImageBuildError(f"docker build failed: {chunk['error'].strip()}")
            text = chunk.get("stream", "").strip()
            if text:
                log.debug("build: %s", text)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


def build_image(client: docker.DockerClient, image: str | None = None, method: Method = "auto",
                force: bool = False, base: str | None = None, pull_timeout: float = 20.0) -> BuildReport:
    """Build the sandbox image unless a current one exists.

    ``method="auto"`` takes the Dockerfile path when ``base`` (default
    ``python:3.12-slim``) is local or pullable and the offline path otherwise.
    ``base`` may name any local Debian-like image with ``python3``.
    """
    image = image or default_image()
    env_method = os.environ.get("TOOLRL_SANDBOX_BUILD_METHOD")
    if method == "auto" and env_method in ("dockerfile", "offline"):
        method = env_method  # type: ignore[assignment]
    base = base or DEFAULT_BASE
    current = None if force else image_is_current(client, image)
    if current is not None:
        return BuildReport(image, (current.labels or {}).get(LABEL_METHOD, "?"), True, 0.0,
                           int(current.attrs.get("Size", 0)))
    t0 = time.monotonic()
    if method == "auto":
        method = "dockerfile" if _base_available(client, base, pull_timeout) else "offline"
    if method == "offline":
        base = rootfs.ensure_base_image(client, force=force)
    elif method == "dockerfile":
        if not _base_available(client, base, pull_timeout):
            raise ImageBuildError(f"base image {base!r} is neither local nor pullable; use --method offline")
    else:
        raise ImageBuildError(f"unknown build method {method!r}")
    old = None
    try:
        old = client.images.get(image).id
    except docker.errors.ImageNotFound:
        pass
    labels = {LABEL_HASH: content_hash(), LABEL_VERSION: __version__, LABEL_METHOD: method}
    log.info("building %s from %s", image, base)
    _docker_build(client, base, image, labels)
    img = client.images.get(image)
    if old and old != img.id:
        try:
            client.images.remove(old)
        except docker.errors.APIError:
            pass  # still used by some container; harmless
    return BuildReport(image, method, False, time.monotonic() - t0, int(img.attrs.get("Size", 0)))
