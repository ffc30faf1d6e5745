"""Exception types of toolrl-sandbox.

Only problems of the *caller* or the *infrastructure set-up* raise; a snippet
that misbehaves never raises, it yields an :class:`~toolrl_sandbox.ExecResult`.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base class of every exception raised by toolrl-sandbox."""


class EngineUnavailableError(SandboxError):
    """The Docker engine cannot be reached."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"the Docker engine is not reachable ({detail}). Start it with "
            "`bash scripts/ensure_docker.sh` (or `nohup dockerd > /tmp/dockerd.log 2>&1 &` as root) "
            "and check `docker info`."
        )


class ImageMissingError(SandboxError):
    """The sandbox image has not been built (or is outdated)."""

    def __init__(self, image: str) -> None:
        super().__init__(f"the sandbox image {image!r} does not exist; build it with `toolrl-sandbox build`.")
        self.image = image


class ImageBuildError(SandboxError):
    """Building the sandbox image failed."""


class PoolClosedError(SandboxError):
    """The pool is not started or has been closed."""


class SandboxBusyError(SandboxError):
    """No container became free for the request (back-pressure)."""


class QueueFullError(SandboxBusyError):
    """Too many callers are already waiting for a container."""


class QueueTimeoutError(SandboxBusyError):
    """The caller waited longer than the queue timeout for a container."""
