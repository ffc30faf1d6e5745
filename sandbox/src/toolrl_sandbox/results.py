"""Result types returned by the pool."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "error", "timeout", "memory", "output_limit", "infra_error"]
STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "memory", "output_limit", "infra_error")


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one snippet.

    ``status``:
      * ``ok``: exited with code 0.
      * ``error``: exited non-zero (an exception, ``sys.exit(n)``, a signal).
      * ``timeout``: still running at the wall-clock timeout, or out of CPU time.
      * ``memory``: ``MemoryError`` (address-space limit) or killed by the OOM killer.
      * ``output_limit``: wrote more than the output cap to stdout or stderr.
      * ``infra_error``: the sandbox itself failed (container died, engine
        error, protocol error); not the snippet's fault, retrying is fair.

    ``exit_code`` is the exit status, or ``-N`` for death by signal ``N``
    (``-9`` after a kill for timeout/output limit), or ``None`` if unknown.
    ``wall_ms`` is the run time measured inside the container.
    """

    status: Status
    stdout: str
    stderr: str
    exit_code: int | None
    wall_ms: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_response(cls, resp: dict[str, Any]) -> ExecResult:
        status = resp.get("status")
        if status not in STATUSES:
            return cls.infra(f"executor sent an unknown status {status!r}")
        return cls(status, resp.get("stdout", ""), resp.get("stderr", ""),
                   resp.get("exit_code"), float(resp.get("wall_ms", 0.0)))

    @classmethod
    def infra(cls, message: str, wall_ms: float = 0.0) -> ExecResult:
        return cls("infra_error", "", f"toolrl-sandbox: {message}\n", None, wall_ms)


@dataclass(frozen=True)
class TestReport:
    """Outcome of :meth:`SandboxPool.run_tests`: ``passed`` out of ``total`` tests."""

    passed: int
    total: int
    result: ExecResult
    failures: tuple[str, ...] = field(default_factory=tuple)

    __test__ = False  # not a pytest class

    @property
    def all_passed(self) -> bool:
        return self.total > 0 and self.passed == self.total and self.result.status == "ok"

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0
