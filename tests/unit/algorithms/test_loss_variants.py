"""Dual-clip, GSPO, truncated IS, token-sum-norm aggregation and the policy-loss hook, against hand-computed values."""

import math

import pytest
import torch

from toolrl.algorithms.losses import (
    PolicyLossInput,
    agg_denominator,
    aggregate,
    gspo_policy_loss,
    policy_loss,
    sequence_log_ratio,
    truncated_is_weights,
)


def test_dual_clip_caps_negative_advantage_tokens():
    # token 0: A = -1, ratio 5 -> max(5, 1.2) = 5, capped at -A * c = 3 (no gradient there)
    # token 1: A = +1, ratio 5 -> max(-5, -1.2) = -1.2 (dual clip does not touch positive advantages)
    old = torch.zeros(1, 2)
    logp = torch.full((1, 2), math.log(5.0), requires_grad=True)
    adv = torch.tensor([[-1.0, 1.0]])
    mask = torch.ones(1, 2)
    loss, _ = policy_loss(logp, old, adv, mask, clip_low=0.2, dual_clip=3.0)
    assert loss.item() == pytest.approx((3.0 - 1.2) / 2)
    loss.backward()
    assert logp.grad.tolist() == [[0.0, 0.0]]
    plain, _ = policy_loss(logp.detach(), old, adv, mask, clip_low=0.2)
    assert plain.item() == pytest.approx((5.0 - 1.2) / 2)


def test_dual_clip_leaves_moderate_ratios_alone():
    old = torch.zeros(1, 1)
    logp = torch.full((1, 1), math.log(1.5), requires_grad=True)
    adv = torch.tensor([[-1.0]])
    loss, _ = policy_loss(logp, old, adv, torch.ones(1, 1), clip_low=0.2, dual_clip=3.0)
    assert loss.item() == pytest.approx(1.5)  # max(1.5, 1.2), below the cap 3
    loss.backward()
    assert logp.grad.item() == pytest.approx(1.5)  # d(-A r)/dlogp = -A r


def test_gspo_sequence_ratio_and_clipping_by_hand():
    old = torch.zeros(2, 2)
    logp = torch.tensor([[0.2, -0.1], [1e-4, 1e-4]], requires_grad=True)
    adv = torch.tensor([[1.0, 1.0], [-2.0, -2.0]])
    mask = torch.ones(2, 2)
    loss, stats = gspo_policy_loss(logp, old, adv, mask, clip_low=3e-4, clip_high=4e-4, agg="seq-mean")
    # seq 0: s = exp(0.05) = 1.05127 > 1.0004 -> clipped: -1 * 1.0004 on both tokens
    # seq 1: s = exp(1e-4) = 1.0001 inside the range -> 2 * 1.0001
    assert loss.item() == pytest.approx((-1.0004 + 2 * math.exp(1e-4)) / 2, abs=1e-6)
    loss.backward()
    # seq 0 clipped: no gradient; seq 1: (1/2 seqs)(1/2 tokens) * -A * s on each token
    assert logp.grad[0].tolist() == [0.0, 0.0]
    assert torch.allclose(logp.grad[1], torch.full((2,), 0.25 * 2 * math.exp(1e-4)))
    assert stats.clip_frac == pytest.approx(0.5)


def test_sequence_log_ratio_value_is_the_length_normalised_mean():
    logp = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    old = torch.tensor([[-1.5, -2.0, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third token is a tool result
    seq = sequence_log_ratio(logp, old, mask)
    assert torch.allclose(seq[0, :2], torch.tensor([0.25, 0.25]))
    seq[0, 0].backward()
    assert logp.grad.tolist() == [[1.0, 0.0, 0.0]]  # each token's gradient is its own logprob's


def test_truncated_is_weights_by_hand():
    old = torch.tensor([[-1.0, -1.0, -2.0, -3.0]])
    rollout = torch.tensor([[-1.5, -0.5, -2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = truncated_is_weights(old, rollout, mask, cap=1.5)
    assert torch.allclose(w, torch.tensor([[1.5, math.exp(-0.5), 1.0, 0.0]]))
    with pytest.raises(ValueError, match="cap"):
        truncated_is_weights(old, rollout, mask, cap=0)


def test_is_weights_scale_each_tokens_loss():
    old = torch.zeros(1, 2)
    logp = torch.zeros(1, 2, requires_grad=True)
    adv = torch.tensor([[1.0, 1.0]])
    w = torch.tensor([[2.0, 0.5]])
    loss, _ = policy_loss(logp, old, adv, torch.ones(1, 2), is_weights=w)
    assert loss.item() == pytest.approx(-(2.0 + 0.5) / 2)
    loss.backward()
    assert logp.grad.tolist() == [[-1.0, -0.25]]


def test_token_sum_norm_divides_by_a_constant_length():
    loss = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert aggregate(loss, mask, "token-sum-norm", norm_len=4).item() == pytest.approx(6 / 8)
    # unlike seq-mean, the short sequence's token weighs the same as each token of the long one
    assert aggregate(loss, mask, "seq-mean").item() == pytest.approx((1.5 + 3) / 2)
    assert agg_denominator(mask, "token-sum-norm", 4) == 8.0
    with pytest.raises(ValueError, match="norm_len"):
        agg_denominator(mask, "token-sum-norm")


def test_token_sum_norm_micro_batches_add_up_to_the_mini_batch():
    loss = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    den = agg_denominator(mask, "token-sum-norm", 3)
    parts = sum(aggregate(loss[i : i + 1], mask[i : i + 1], "token-sum-norm", den) for i in range(3))
    assert parts.item() == pytest.approx(aggregate(loss, mask, "token-sum-norm", norm_len=3).item())


def test_registered_policy_losses_and_a_third_party_one(plugin_manager):
    from toolrl import hookimpl, plugins
    from toolrl.algorithms.losses import PolicyLossOutput

    assert {"ppo", "gspo"} <= set(plugins.names("policy_losses"))

    def reinforce(inp, config):  # plain REINFORCE: -A * logprob, no ratio
        loss = -(inp.advantages * inp.logprobs * inp.mask).sum() / inp.mask.sum()
        return PolicyLossOutput(loss, {"actor/reinforce": float(loss.detach())})

    class P:
        @hookimpl
        def register_policy_losses(self, register):
            register("reinforce", reinforce)

    plugin_manager.register(P(), name="reinforce-loss")
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    inp = PolicyLossInput(logp, logp.detach(), torch.tensor([[1.0, -1.0]]), torch.ones(1, 2))
    out = plugins.get("policy_losses", "reinforce")(inp, None)
    assert out.loss.item() == pytest.approx(-(-1.0 + 2.0) / 2)
    from types import SimpleNamespace

    cfg = SimpleNamespace(clip_ratio=0.2, clip_ratio_high=None, dual_clip=None)
    ppo = plugins.get("policy_losses", "ppo")(inp, cfg)
    assert ppo.loss.item() == pytest.approx(0.0)  # ratio 1: -mean(A) = 0
    assert set(ppo.stats) >= {"actor/clip_frac", "actor/approx_kl", "actor/ratio_max"}
    gspo = plugins.get("policy_losses", "gspo")(inp, cfg)
    assert gspo.loss.item() == pytest.approx(0.0)
