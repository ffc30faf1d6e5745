"""toolrl-sandbox: a fast, hardened Docker execution pool for untrusted Python snippets.

Standalone: depends on the ``docker`` SDK only and never imports ``toolrl``.
"""

__version__ = "0.1.0"

from .engine import ContainerLimits  # noqa: E402
from .errors import (  # noqa: E402
    EngineUnavailableError,
    ImageBuildError,
    ImageMissingError,
    PoolClosedError,
    QueueFullError,
    QueueTimeoutError,
    SandboxBusyError,
    SandboxError,
)
from .image import build_image, default_image  # noqa: E402
from .pool import SandboxPool  # noqa: E402
from .results import ExecResult, Status, TestReport  # noqa: E402
from .sync import SyncSandboxPool  # noqa: E402

__all__ = [
    "ContainerLimits", "EngineUnavailableError", "ExecResult", "ImageBuildError", "ImageMissingError",
    "PoolClosedError", "QueueFullError", "QueueTimeoutError", "SandboxBusyError", "SandboxError",
    "SandboxPool", "Status", "SyncSandboxPool", "TestReport", "__version__", "build_image", "default_image",
]
