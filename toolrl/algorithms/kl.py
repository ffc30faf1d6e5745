"""KL estimators (Schulman's k1/k2/k3) and the KL coefficient controllers.

With `log r = ref_logprob - logprob` for a token sampled from the policy:

- k1 = -log r                 unbiased, high variance, can be negative per token
- k2 = (log r)^2 / 2          biased, low variance, always >= 0
- k3 = (r - 1) - log r        unbiased, low variance, always >= 0

The penalty goes into the loss (GRPO's default: `kl_coef * KL` is added to the
policy loss, differentiated through `logprob`) or into the reward (PPO's
default: `-kl_coef * KL` per token, before GAE); see `algorithm.kl_in`.

Controllers: `fixed` keeps `kl_coef`; `adaptive` (Ziegler et al. 2019) moves it
toward `target_kl`: `coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon`
after each step, where n is the number of samples in the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch

KLEstimator = Literal["k1", "k2", "k3"]


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: KLEstimator = "k3") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from log-probabilities of sampled tokens."""
    log_r = (ref_logprobs - logprobs).clamp(-20.0, 20.0)
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    if kind == "k3":
        return torch.exp(log_r) - 1.0 - log_r
    raise ValueError(f"unknown KL estimator {kind!r}; use k1, k2 or k3")


class KLController(Protocol):
    """Holds the current KL coefficient and updates it after each step."""

    value: float

    def update(self, current_kl: float, n_samples: int) -> None: ...

    def state_dict(self) -> dict[str, float]: ...

    def load_state_dict(self, state: dict[str, float]) -> None: ...


@dataclass
class FixedKLController:
    value: float

    def update(self, current_kl: float, n_samples: int) -> None:
        return None

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


@dataclass
class AdaptiveKLController:
    value: float
    target: float
    horizon: int

    def update(self, current_kl: float, n_samples: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_samples / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


def make_kl_controller(kind: str, coef: float, target: float, horizon: int) -> KLController:
    if kind == "fixed":
        return FixedKLController(coef)
    if kind == "adaptive":
        return AdaptiveKLController(coef, target, horizon)
    raise ValueError(f"unknown KL controller {kind!r}; use 'fixed' or 'adaptive'")
