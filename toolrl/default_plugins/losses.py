"""Built-in policy losses: ppo (token-level clipped surrogate, clip-higher, dual-clip) and gspo (sequence-level ratio).

Select one with `algorithm.policy_loss`; the wrappers import torch only when called."""

from toolrl.hookspecs import hookimpl


def ppo(inp, config):
    """Token-level PPO clip with clip_ratio / clip_ratio_high and algorithm.dual_clip; see losses.ppo_clip_loss."""
    from toolrl.algorithms.losses import ppo_clip_loss

    return ppo_clip_loss(inp, config)


def gspo(inp, config):
    """GSPO: the clipped surrogate on the length-normalised sequence ratio; see losses.gspo_loss."""
    from toolrl.algorithms.losses import gspo_loss

    return gspo_loss(inp, config)


@hookimpl
def register_policy_losses(register):
    register("ppo", ppo)
    register("gspo", gspo)
