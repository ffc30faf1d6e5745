"""Bounded staleness for asynchronous rollouts: which weights may sample which batch (pure, no threads).

Versions count trainer updates: the initial weights are version 0, and step k's
update makes version k. Step k trains on batch k.

    synchronous (max_staleness = 0)      batch k is sampled with version k-1 (the newest)
    max_staleness = S                    batch k may be sampled with any version >= k-1-S

so while step k trains (the newest published version is k-1), batches up to
k+S may be generated, and a batch is never more than S updates behind the
weights it is trained into: its lag `(k-1) - v` is in 0..S. The producer of
`toolrl.trainer.pipeline` asks `may_start` before it samples a batch;
`check_batch` is the guard that the trainer applies to what it gets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from toolrl.errors import ToolrlError


@dataclass(frozen=True)
class StalenessBound:
    """The rule `version >= step - 1 - max_staleness` and what follows from it."""

    max_staleness: int

    def __post_init__(self) -> None:
        if self.max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {self.max_staleness}")

    def oldest_version(self, step: int) -> int:
        """The oldest weight version that may sample batch `step`."""
        return max(0, step - 1 - self.max_staleness)

    def may_start(self, step: int, version: int) -> bool:
        """Whether batch `step` may be sampled with weights of `version`."""
        return version >= self.oldest_version(step)

    def furthest_step(self, version: int) -> int:
        """The last batch that weights of `version` may sample."""
        return version + 1 + self.max_staleness

    def lag(self, step: int, version: int) -> int:
        """Updates between the weights that sampled batch `step` and the weights it is trained into (k-1)."""
        return (step - 1) - version

    def check_batch(self, step: int, versions: Iterable[int]) -> int:
        """The batch's largest lag; raises when a trajectory is older than the bound or newer than possible."""
        vs = list(versions)
        if not vs:
            return 0
        oldest, newest = min(vs), max(vs)
        if oldest < self.oldest_version(step) or newest > step - 1:
            raise ToolrlError(
                f"batch {step} holds trajectories of weight versions {oldest}..{newest}, outside the allowed "
                f"{self.oldest_version(step)}..{step - 1} (trainer.async_rollouts.max_staleness={self.max_staleness})",
                where="toolrl.trainer.pipeline", fix="this is a bug in toolrl's asynchronous pipeline; please report it")
        return self.lag(step, oldest)


def queue_bound(max_staleness: int) -> int:
    """Most finished batches that can wait for the trainer: while step k trains, batches k+1..k+S."""
    return max_staleness
