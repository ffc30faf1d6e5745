"""Built-in advantage estimators: grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline, ppo.

Each wrapper declares what its estimator needs (`toolrl.algorithms.spec.declare`:
groups, a critic, where the KL goes) and imports torch only when called, so
`toolrl plugins` and config validation stay fast."""

from toolrl.algorithms.spec import declare
from toolrl.hookspecs import hookimpl


@declare(groups=True)
def grpo(batch, config):
    """Group-normalised advantage (r - group mean) / group std; see toolrl.algorithms.advantages.grpo."""
    from toolrl.algorithms.advantages import grpo as impl

    return impl(batch, config)


@declare(groups=True)
def dr_grpo(batch, config):
    """Dr. GRPO: r - group mean, no std division (pair with loss_agg=token-sum-norm); see advantages.dr_grpo."""
    from toolrl.algorithms.advantages import dr_grpo as impl

    return impl(batch, config)


@declare(groups=True)
def rloo(batch, config):
    """Leave-one-out baseline r_i - mean of the others; see toolrl.algorithms.advantages.rloo."""
    from toolrl.algorithms.advantages import rloo as impl

    return impl(batch, config)


@declare(kl_in="reward")
def reinforce_pp(batch, config):
    """REINFORCE++: returns-to-go with the KL in the reward, normalised over the whole batch."""
    from toolrl.algorithms.advantages import reinforce_pp as impl

    return impl(batch, config)


@declare(groups=True, kl_in="reward")
def reinforce_pp_baseline(batch, config):
    """REINFORCE++ with a group-mean baseline, then the global batch normalisation."""
    from toolrl.algorithms.advantages import reinforce_pp_baseline as impl

    return impl(batch, config)


@declare(critic=True, kl_in="reward")
def ppo(batch, config):
    """GAE over sampled tokens with a critic; see toolrl.algorithms.advantages.gae."""
    from toolrl.algorithms.advantages import gae as impl

    return impl(batch, config)


@hookimpl
def register_advantage_estimators(register):
    for fn in (grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline, ppo):
        register(fn.__name__, fn)
