"""dr_grpo, reinforce_pp and reinforce_pp_baseline against values computed by hand; the declared needs."""

from types import SimpleNamespace

import pytest
import torch

from toolrl.algorithms.advantages import (
    AdvantageInput,
    dr_grpo,
    reinforce_pp,
    reinforce_pp_baseline,
    returns_to_go,
)
from toolrl.algorithms.spec import EstimatorNeeds, declare, estimator_needs


def _batch(scores, groups, mask, valid=None, token_rewards=None):
    scores = torch.tensor(scores, dtype=torch.float32)
    mask = torch.tensor(mask, dtype=torch.float32)
    valid = torch.ones(len(scores), dtype=torch.bool) if valid is None else torch.tensor(valid)
    return AdvantageInput(scores, mask, groups, valid, token_rewards=token_rewards)


def test_dr_grpo_never_divides_by_the_std():
    b = _batch([1, 0, 0, 1, 2, 2], ["a"] * 4 + ["b"] * 2, [[1, 1]] * 6)
    adv = dr_grpo(b, SimpleNamespace(norm_adv_by_std=True)).advantages  # the flag does not bring the std back
    assert torch.allclose(adv[:, 0], torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0]))
    assert torch.equal(adv[:, 0], adv[:, 1])


def test_dr_grpo_leaves_out_invalid_samples():
    b = _batch([3, 1, 100], ["a"] * 3, [[1]] * 3, valid=[True, True, False])
    assert dr_grpo(b, None).advantages[:, 0].tolist() == [1.0, -1.0, 0.0]


def test_reinforce_pp_normalises_over_the_whole_batch():
    # returns (gamma 1, no KL): row0 [1, 1, -], row1 [0, -, -], row2 [3, 3, 3]
    # valid tokens 1, 1, 0, 3, 3, 3: mean 11/6, unbiased std 1.329160
    b = _batch([1, 0, 3], ["a", "b", "c"], [[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    adv = reinforce_pp(b, SimpleNamespace(gamma=1.0)).advantages
    expected = torch.tensor([[-0.626961, -0.626961, 0.0], [-1.379314, 0.0, 0.0], [0.877745, 0.877745, 0.877745]])
    assert torch.allclose(adv, expected, atol=1e-5)


def test_returns_to_go_discounts_and_steps_over_tool_tokens():
    rewards = torch.tensor([[-0.1, 0.0, 1.8]])
    mask = torch.tensor([[1.0, 0.0, 1.0]])  # token 1 is a tool result
    g = returns_to_go(rewards, mask, gamma=0.5)
    assert torch.allclose(g, torch.tensor([[-0.1 + 0.5 * 1.8, 0.0, 1.8]]))


def test_reinforce_pp_puts_the_kl_penalty_on_every_token():
    # one sample: score 2 on the last token, KL penalty -0.1 / -0.2 on tokens 0 / 2, gamma 0.5
    # and a second sample with score 0 so that the batch has variance
    kl = torch.tensor([[-0.1, 0.0, -0.2], [0.0, 0.0, 0.0]])
    b = _batch([2, 0], ["a", "b"], [[1, 0, 1], [1, 0, 0]], token_rewards=kl)
    adv = reinforce_pp(b, SimpleNamespace(gamma=0.5)).advantages
    vals = torch.tensor([0.8, 1.8, 0.0])  # returns on the three valid tokens
    z = (vals - vals.mean()) / vals.std()
    assert torch.allclose(adv, torch.tensor([[z[0], 0.0, z[1]], [z[2], 0.0, 0.0]]), atol=1e-5)


def test_reinforce_pp_baseline_subtracts_the_group_mean_then_normalises_globally():
    b = _batch([1, 0, 4, 2], ["a", "a", "b", "b"], [[1]] * 4)
    adv = reinforce_pp_baseline(b, SimpleNamespace(gamma=1.0)).advantages[:, 0]
    # centred: 0.5, -0.5, 1, -1; unbiased std sqrt(2.5 / 3) = 0.912871
    assert torch.allclose(adv, torch.tensor([0.547723, -0.547723, 1.095445, -1.095445]), atol=1e-5)


def test_reinforce_pp_excluded_samples_get_zero():
    b = _batch([1, 0, 9], ["a", "b", "c"], [[1], [1], [1]], valid=[True, True, False])
    adv = reinforce_pp(b, SimpleNamespace(gamma=1.0)).advantages[:, 0]
    assert adv[2] == 0 and torch.allclose(adv[:2], torch.tensor([0.707107, -0.707107]), atol=1e-5)


def test_declared_needs_of_the_builtins(plugin_manager):
    from toolrl import plugins

    reg = plugins.registry("advantage_estimators")
    needs = {n: estimator_needs(reg.get(n)) for n in reg.names()}
    assert needs["grpo"] == needs["dr_grpo"] == needs["rloo"] == EstimatorNeeds(groups=True)
    assert needs["reinforce_pp"] == EstimatorNeeds(kl_in="reward")
    assert needs["reinforce_pp_baseline"] == EstimatorNeeds(groups=True, kl_in="reward")
    assert needs["ppo"] == EstimatorNeeds(critic=True, kl_in="reward")


def test_declare_rejects_a_bad_kl_place():
    with pytest.raises(ValueError, match="kl_in"):
        declare(kl_in="both")


def test_config_checks_read_the_declarations_not_the_names(plugin_manager):
    from toolrl import hookimpl
    from toolrl.config import load_config
    from toolrl.errors import ConfigError

    @declare(groups=True)
    def pairwise(batch, config):
        return None

    def single(batch, config):
        return None

    class P:
        @hookimpl
        def register_advantage_estimators(self, register):
            register("pairwise", pairwise)
            register("single", single)

    plugin_manager.register(P(), name="estimators-under-test")
    with pytest.raises(ConfigError, match="rollout.n"):
        load_config(data={"algorithm": {"advantage": "pairwise"}, "rollout": {"n": 1}})
    cfg = load_config(data={"algorithm": {"advantage": "single"}, "rollout": {"n": 1}})
    assert cfg.kl_in == "loss"
    with pytest.raises(ConfigError, match="dynamic sampling"):
        load_config(data={"algorithm": {"advantage": "single", "dynamic_sampling": True}})
    assert load_config(data={"algorithm": {"advantage": "reinforce_pp"}}).kl_in == "reward"
