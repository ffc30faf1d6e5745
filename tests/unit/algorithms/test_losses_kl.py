"""The clipped policy loss, value loss, aggregation and KL estimators against direct formulas."""

import math

import pytest
import torch

from toolrl.algorithms.kl import AdaptiveKLController, FixedKLController, kl_estimate, make_kl_controller
from toolrl.algorithms.losses import (
    agg_denominator,
    aggregate,
    entropy_from_logits,
    logprobs_from_logits,
    masked_whiten,
    policy_loss,
    value_loss,
)


def _rand(seed=0, B=3, T=5):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g) * 3
    old = logp + (torch.rand(B, T, generator=g) - 0.5) * 0.8
    adv = torch.randn(B, T, generator=g)
    mask = (torch.rand(B, T, generator=g) > 0.3).float()
    mask[:, 0] = 1
    return logp, old, adv, mask


def test_policy_loss_matches_direct_formula():
    logp, old, adv, mask = _rand()
    loss, stats = policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, agg="token-mean")
    expected_terms = []
    clipped_count = 0
    for b in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            if not mask[b, t]:
                continue
            r = math.exp(logp[b, t] - old[b, t])
            a = float(adv[b, t])
            u, c = -a * r, -a * min(max(r, 0.8), 1.28)
            expected_terms.append(max(u, c))
            clipped_count += c > u
    assert loss.item() == pytest.approx(sum(expected_terms) / len(expected_terms), rel=1e-5)
    assert stats.clip_frac == pytest.approx(clipped_count / len(expected_terms))
    assert 0 < stats.clip_frac < 1  # the example exercises both branches


def test_policy_loss_gradient_is_advantage_at_ratio_one():
    # on-policy (old == new): d loss / d logp = -A / N on masked tokens, 0 elsewhere
    logp, _, adv, mask = _rand(1)
    logp = logp.clone().requires_grad_(True)
    loss, stats = policy_loss(logp, logp.detach(), adv, mask)
    loss.backward()
    assert torch.allclose(logp.grad, -adv * mask / mask.sum(), atol=1e-6)
    assert stats.clip_frac == 0 and stats.approx_kl == pytest.approx(0.0, abs=1e-7)


def test_seq_mean_weighs_sequences_equally():
    loss = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    assert aggregate(loss, mask, "token-mean").item() == pytest.approx(8 / 5)
    assert aggregate(loss, mask, "seq-mean").item() == pytest.approx((1 + 4) / 2)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean"])
def test_micro_batch_accumulation_equals_whole_batch(agg):
    logp, old, adv, mask = _rand(2, B=4, T=6)
    full = logp.clone().requires_grad_(True)
    policy_loss(full, old, adv, mask, agg=agg)[0].backward()
    acc = logp.clone().requires_grad_(True)
    denom = agg_denominator(mask, agg)
    for sl in (slice(0, 2), slice(2, 4)):
        policy_loss(acc[sl], old[sl], adv[sl], mask[sl], agg=agg, denominator=denom)[0].backward()
    assert torch.allclose(full.grad, acc.grad, atol=1e-7)


def test_value_loss_clipping_by_hand():
    values = torch.tensor([[1.0, 0.0, 0.5]])
    old = torch.tensor([[0.0, 0.0, 0.5]])
    returns = torch.tensor([[2.0, 1.0, 0.5]])
    mask = torch.tensor([[1, 1, 0]])
    loss, frac = value_loss(values, old, returns, mask, clip=0.2)
    # t0: unclipped (1-2)^2 = 1, clipped (0.2-2)^2 = 3.24 -> 3.24; t1: both 1.0
    assert loss.item() == pytest.approx(0.5 * (3.24 + 1.0) / 2)
    assert frac == pytest.approx(0.5)
    plain, _ = value_loss(values, old, returns, mask, clip=None)
    assert plain.item() == pytest.approx(0.5 * (1.0 + 1.0) / 2)


def test_logprobs_and_entropy_from_logits():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 7, generator=g)
    ids = torch.randint(0, 7, (2, 4), generator=g)
    ref = torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(logprobs_from_logits(logits, ids), ref, atol=1e-6)
    p = torch.softmax(logits, -1)
    assert torch.allclose(entropy_from_logits(logits), -(p * p.log()).sum(-1), atol=1e-5)


def test_masked_whiten():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, 5.0]])
    m = torch.tensor([[1, 1, 0], [1, 1, 1]]).float()
    w = masked_whiten(x, m)
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert torch.allclose(w[m.bool()], (vals - vals.mean()) / vals.std(), atol=1e-5)
    assert w[0, 2] == 0


def test_kl_estimators_direct_formulas():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -1.0, -0.5])
    log_r = ref - logp
    assert torch.allclose(kl_estimate(logp, ref, "k1"), logp - ref)
    assert torch.allclose(kl_estimate(logp, ref, "k2"), 0.5 * log_r**2)
    assert torch.allclose(kl_estimate(logp, ref, "k3"), torch.exp(log_r) - 1 - log_r)
    assert torch.all(kl_estimate(logp, ref, "k3") >= 0)
    with pytest.raises(ValueError, match="k1, k2 or k3"):
        kl_estimate(logp, ref, "k4")


def test_k1_and_k3_are_unbiased_for_the_true_kl():
    g = torch.Generator().manual_seed(0)
    p_logits, q_logits = torch.randn(6, generator=g), torch.randn(6, generator=g) * 0.5
    logp_all, logq_all = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
    true_kl = float((logp_all.exp() * (logp_all - logq_all)).sum())
    samples = torch.multinomial(logp_all.exp(), 400_000, replacement=True, generator=g)
    logp, logq = logp_all[samples], logq_all[samples]
    assert kl_estimate(logp, logq, "k1").mean().item() == pytest.approx(true_kl, rel=0.03)
    assert kl_estimate(logp, logq, "k3").mean().item() == pytest.approx(true_kl, rel=0.03)
    # k2 is biased but close for nearby distributions, and never negative
    assert kl_estimate(logp, logq, "k2").mean().item() == pytest.approx(true_kl, rel=0.5)


def test_kl_controllers():
    fixed = make_kl_controller("fixed", 0.1, 0.05, 100)
    fixed.update(10.0, 64)
    assert isinstance(fixed, FixedKLController) and fixed.value == 0.1
    ad = make_kl_controller("adaptive", 0.1, 0.05, 100)
    assert isinstance(ad, AdaptiveKLController)
    ad.update(0.1, 10)  # error clipped to +0.2: 0.1 * (1 + 0.2 * 10/100)
    assert ad.value == pytest.approx(0.1 * 1.02)
    ad.update(0.04, 50)  # error -0.2
    assert ad.value == pytest.approx(0.1 * 1.02 * 0.9)
    ad2 = make_kl_controller("adaptive", 1.0, 0.05, 100)
    ad2.load_state_dict(ad.state_dict())
    assert ad2.value == ad.value
