"""SFT and DPO/IPO/hinge objectives against hand-computed values."""

import math

import pytest
import torch

from toolrl.algorithms.preference import dpo_loss, sequence_logprobs, sft_loss


def test_sft_loss_is_the_nll_of_masked_tokens():
    logp = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -9.0, -9.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    loss = sft_loss(logp, mask)  # token-mean: (1 + 2 + 0.5) / 3
    assert loss.item() == pytest.approx(3.5 / 3)
    loss.backward()
    assert torch.allclose(logp.grad, -mask / 3)
    assert sft_loss(logp.detach(), mask, "seq-mean").item() == pytest.approx((1.5 + 0.5) / 2)


def test_sequence_logprobs_sum_masked_tokens():
    assert sequence_logprobs(torch.tensor([[-1.0, -2.0, -4.0]]), torch.tensor([[1.0, 0.0, 1.0]])).tolist() == [-5.0]


# chosen: policy -10, reference -12 (log-ratio +2); rejected: policy -15, reference -14 (log-ratio -1): h = 3
PC, PR, RC, RR = (torch.tensor([v]) for v in (-10.0, -15.0, -12.0, -14.0))


def test_dpo_sigmoid_by_hand():
    losses, stats = dpo_loss(PC, PR, RC, RR, beta=0.1, kind="sigmoid")
    assert losses.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.3))))
    assert stats.reward_chosen == pytest.approx(0.2) and stats.reward_rejected == pytest.approx(-0.1)
    assert stats.accuracy == 1.0 and stats.margin == pytest.approx(0.3)


def test_dpo_sigmoid_gradient_by_hand():
    pc = PC.clone().requires_grad_(True)
    pr = PR.clone().requires_grad_(True)
    losses, _ = dpo_loss(pc, pr, RC, RR, beta=0.1)
    losses.sum().backward()
    g = 0.1 * (1 - 1 / (1 + math.exp(-0.3)))  # beta * sigmoid(-beta h)
    assert pc.grad.item() == pytest.approx(-g) and pr.grad.item() == pytest.approx(g)


def test_ipo_by_hand():
    losses, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, kind="ipo")
    assert losses.item() == pytest.approx((3 - 1 / 0.2) ** 2)  # (h - 1/(2 beta))^2 = 4


def test_hinge_by_hand():
    assert dpo_loss(PC, PR, RC, RR, beta=0.1, kind="hinge")[0].item() == pytest.approx(1 - 0.3)
    assert dpo_loss(PC, PR, RC, RR, beta=1.0, kind="hinge")[0].item() == 0.0  # margin beyond 1: no loss


def test_dpo_rejects_bad_arguments():
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(PC, PR, RC, RR, beta=0)
    with pytest.raises(ValueError, match="sigmoid"):
        dpo_loss(PC, PR, RC, RR, kind="kto")
