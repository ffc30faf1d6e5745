"""Offline base image: a minimal Debian root file system made by debootstrap.

Used when no registry can deliver ``python:3.12-slim``.  The package mirror
is the one the host's apt already uses (override with
``TOOLRL_SANDBOX_MIRROR``; the suite with ``TOOLRL_SANDBOX_SUITE``).
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import docker

from .errors import ImageBuildError

log = logging.getLogger(__name__)

BASE_REPOSITORY = "toolrl-sandbox-base"
PACKAGES = ("python3",)
# Deleted from the root file system after debootstrap: documentation,
# translations and package-manager caches the sandbox never needs.
STRIP = (
    "usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*",
    "usr/share/lintian/*", "usr/share/bash-completion/*", "usr/share/common-licenses/*",
    "var/cache/apt/*", "var/lib/apt/lists/*", "var/cache/debconf/*-old", "var/log/*",
    "var/cache/ldconfig/*", "usr/lib/python3*/ensurepip", "usr/lib/python3*/idlelib",
    "usr/lib/python3*/lib2to3", "usr/lib/python3*/pydoc_data", "usr/lib/python3*/turtledemo",
)
RECIPE = "debootstrap --variant=minbase --include=%s; strip %s" % (",".join(PACKAGES), " ".join(STRIP))


def host_suite() -> str:
    suite = os.environ.get("TOOLRL_SANDBOX_SUITE")
    if suite:
        return suite
    try:
        with open("/etc/os-release") as fh:
            for line in fh:
                key, _, value = line.strip().partition("=")
                if key == "VERSION_CODENAME" and value:
                    return value.strip('"')
    except OSError:
        pass
    raise ImageBuildError("cannot tell the Debian/Ubuntu suite of this host; set TOOLRL_SANDBOX_SUITE")


def host_mirror(suite: str) -> str:
    """The archive URI the host's apt uses for ``suite``."""
    mirror = os.environ.get("TOOLRL_SANDBOX_MIRROR")
    if mirror:
        return mirror
    candidates: list[tuple[str, list[str]]] = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for block in Path(path).read_text(errors="replace").split("\n\n"):
            fields: dict[str, str] = {}
            for line in block.splitlines():
                if ":" in line and not line.startswith("#"):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    candidates.append((uri, fields.get("suites", "").split()))
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split("#", 1)[0].split()
            if words and words[0] == "deb":
                words = [w for w in words[1:] if not w.startswith("[") and not w.endswith("]")]
                if len(words) >= 2:
                    candidates.append((words[0], [words[1]]))
    for uri, suites in candidates:
        if suite in suites:
            return uri
    raise ImageBuildError(
        f"no apt source for suite {suite!r} found in /etc/apt; set TOOLRL_SANDBOX_MIRROR to a Debian mirror URL"
    )


def base_tag() -> str:
    suite = host_suite()
    digest = hashlib.sha256(RECIPE.encode()).hexdigest()[:12]
    return f"{BASE_REPOSITORY}:{suite}-{digest}"


def _strip(root: Path) -> None:
    for pattern in STRIP:
        for path in glob.glob(str(root / pattern)):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "toolrl-sandbox" / "debootstrap"
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_base_image(client: docker.DockerClient, force: bool = False) -> str:
    """Make (or reuse) the offline base image; returns its tag."""
    tag = base_tag()
    if not force:
        try:
            client.images.get(tag)
            log.info("offline base image %s already exists", tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
    if shutil.which("debootstrap") is None:
        raise ImageBuildError(
            "the offline build needs debootstrap: `apt-get install -y debootstrap` "
            "(bash scripts/ensure_docker.sh installs it)"
        )
    if os.geteuid() != 0:
        raise ImageBuildError("the offline build runs debootstrap, which needs root")
    suite = host_suite()
    mirror = host_mirror(suite)
    work = Path(tempfile.mkdtemp(prefix="toolrl-sandbox-rootfs-", dir="/var/tmp"))
    try:
        root = work / "rootfs"
        t0 = time.monotonic()
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
               f"--cache-dir={_cache_dir()}", suite, str(root), mirror]
        log.info("running %s", " ".join(cmd))
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.splitlines()[-15:])
            raise ImageBuildError(f"debootstrap failed ({proc.returncode}):\n{tail}")
        log.info("debootstrap took %.1f s", time.monotonic() - t0)
        _strip(root)
        tarball = work / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tarball), "."], check=True)
        repository, _, version = tag.partition(":")
        client.api.import_image_from_file(
            str(tarball), repository=repository, tag=version,
            changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                     "ENV LANG=C.UTF-8", 'CMD ["python3"]'],
        )
        client.images.get(tag)  # raises if the import silently failed
        log.info("imported %s (%.1f s in all)", tag, time.monotonic() - t0)
        return tag
    finally:
        shutil.rmtree(work, ignore_errors=True)
