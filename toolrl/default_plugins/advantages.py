"""Built-in advantage estimators: grpo (group-normalised), rloo (leave-one-out), ppo (critic + GAE).

The wrappers import torch only when called, so `toolrl plugins` stays fast."""

from toolrl.hookspecs import hookimpl


def grpo(batch, config):
    """Group-normalised advantage (r - group mean) / group std; see toolrl.algorithms.advantages.grpo."""
    from toolrl.algorithms.advantages import grpo as impl

    return impl(batch, config)


def rloo(batch, config):
    """Leave-one-out baseline r_i - mean of the others; see toolrl.algorithms.advantages.rloo."""
    from toolrl.algorithms.advantages import rloo as impl

    return impl(batch, config)


def ppo(batch, config):
    """GAE over sampled tokens with a critic; see toolrl.algorithms.advantages.gae."""
    from toolrl.algorithms.advantages import gae as impl

    return impl(batch, config)


ppo.needs_critic = True  # the trainer starts the critic worker for this estimator


@hookimpl
def register_advantage_estimators(register):
    register("grpo", grpo)
    register("rloo", rloo)
    register("ppo", ppo)
