"""What an advantage estimator or policy loss needs from the run, declared by the plugin.

This module imports neither torch nor the registries, so `toolrl.config` can
read the declarations while it validates a config: the config checks ask
"does this estimator compare samples within a group?" instead of naming
algorithms.

    from toolrl.algorithms.spec import declare

    @declare(groups=True)              # needs rollout.n >= 2 and whole groups per mini-batch
    def my_estimator(batch, config): ...

    @declare(critic=True, kl_in="reward")   # a value model; the KL penalty goes into the reward by default
    def my_gae(batch, config): ...

Estimators that declare nothing need nothing: no groups, no critic, KL in the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class EstimatorNeeds:
    """An estimator's requirements.

    Attributes:
        groups: it compares the samples of one prompt (GRPO, RLOO, ...): the
            config must sample `rollout.n >= 2` per prompt, and mini-batches must
            hold whole groups.
        critic: it needs a value model (PPO/GAE): the trainer starts the critic
            worker and fills `AdvantageInput.values`.
        kl_in: where `algorithm.kl_in=auto` puts the KL penalty: "loss" (added to
            the policy loss) or "reward" (a per-token penalty before the estimator).
    """

    groups: bool = False
    critic: bool = False
    kl_in: Literal["loss", "reward"] = "loss"


def declare(*, groups: bool = False, critic: bool = False, kl_in: Literal["loss", "reward"] | None = None
            ) -> Callable[[F], F]:
    """Decorator: attach an `EstimatorNeeds` to an estimator (or a policy loss)."""
    if kl_in not in (None, "loss", "reward"):
        raise ValueError(f"kl_in must be 'loss' or 'reward', got {kl_in!r}")

    def mark(fn: F) -> F:
        fn.needs_groups = groups  # type: ignore[attr-defined]
        fn.needs_critic = critic  # type: ignore[attr-defined]
        fn.kl_in = kl_in or ("reward" if critic else "loss")  # type: ignore[attr-defined]
        return fn

    return mark


def estimator_needs(fn: Any) -> EstimatorNeeds:
    """The declared needs of `fn` (attributes `needs_groups`, `needs_critic`, `kl_in`; absent = not needed)."""
    critic = bool(getattr(fn, "needs_critic", False))
    kl_in = getattr(fn, "kl_in", None) or ("reward" if critic else "loss")
    return EstimatorNeeds(groups=bool(getattr(fn, "needs_groups", False)), critic=critic, kl_in=kl_in)


def registered_needs(name: str) -> EstimatorNeeds | None:
    """The needs of the advantage estimator registered as `name`; None when no plugin registers it."""
    from toolrl import plugins

    reg = plugins.registry("advantage_estimators")
    return estimator_needs(reg.get(name)) if name in reg else None
