"""The trainer's micro-batch loss (`optimize.loss_terms`) uses the configured policy loss, truncated IS and
token-sum-norm: checked on a tiny real Llama against the loss functions called directly."""

import pytest
import torch

from toolrl.algorithms.losses import agg_denominator, gspo_policy_loss, policy_loss, truncated_is_weights
from toolrl.config import load_config
from toolrl.trainer.batch import build_batch
from toolrl.trainer.forward import response_logprobs
from toolrl.trainer.optimize import loss_terms
from toolrl.types import Trajectory


def _model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    return m.eval()


def _batch():
    trajs = [Trajectory("a", i, (1, 2, 3), r, m, tuple(-1.0 - 0.1 * k for k in range(len(r))),
                        ({"role": "user", "content": "q"},), 1)
             for i, (r, m) in enumerate([((4, 5, 6), (1, 0, 1)), ((7, 8), (1, 1))])]
    b = build_batch(trajs, ["a", "a"], [True, True], 0)
    b.extras["advantages"] = torch.tensor([[1.0, 0.0, 1.0], [-1.0, -1.0, 0.0]]) * b.response_mask
    b.extras["old_logprobs"] = torch.full_like(b.response_mask, -4.0) * b.response_mask
    return b


@pytest.mark.parametrize("overrides,expected", [
    ({}, "ppo"),
    ({"policy_loss": "gspo", "clip_ratio": 3e-4, "clip_ratio_high": 4e-4}, "gspo"),
    ({"dual_clip": 3.0, "tis_cap": 1.5}, "ppo+"),
    ({"loss_agg": "token-sum-norm", "loss_norm_tokens": 5}, "norm"),
])
def test_loss_terms_follow_the_config(overrides, expected):
    cfg = load_config(data={"algorithm": overrides})
    alg = cfg.algorithm
    model, batch = _model(), _batch()
    logprobs, _ = response_logprobs(model, batch, 1.0, share_prompt=False)
    mask, adv, old = batch.response_mask, batch["advantages"], batch["old_logprobs"]
    den = agg_denominator(mask, alg.loss_agg, 5 if expected == "norm" else None)
    loss, stats = loss_terms(logprobs, None, batch, alg, "loss", 0.0, den, 5 if expected == "norm" else None)
    if expected == "gspo":
        want, _ = gspo_policy_loss(logprobs, old, adv, mask, clip_low=3e-4, clip_high=4e-4, agg=alg.loss_agg,
                                   denominator=den)
    elif expected == "ppo+":
        w = truncated_is_weights(old, batch["rollout_logprobs"], mask, 1.5)
        want, _ = policy_loss(logprobs, old, adv, mask, agg=alg.loss_agg, denominator=den, dual_clip=3.0, is_weights=w)
        assert stats["actor/tis_weight_mean"] == pytest.approx(float((w * mask).sum() / mask.sum()))
    else:
        want, _ = policy_loss(logprobs, old, adv, mask, agg=alg.loss_agg, denominator=den, norm_len=5)
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    assert {"loss/policy", "actor/clip_frac", "actor/ratio_max"} <= set(stats)
    if expected == "norm":
        assert den == 2 * 5  # two sequences x the constant length


def test_gspo_and_ppo_differ_when_the_ratios_are_not_one():
    model, batch = _model(), _batch()
    logprobs, _ = response_logprobs(model, batch, 1.0, share_prompt=False)
    ppo_loss, _ = loss_terms(logprobs, None, batch, load_config(data={}).algorithm, "loss", 0.0, 4.0)
    gspo_cfg = load_config(data={"algorithm": {"policy_loss": "gspo", "clip_ratio": 10.0}}).algorithm
    gspo_loss, _ = loss_terms(logprobs, None, batch, gspo_cfg, "loss", 0.0, 4.0)
    assert ppo_loss.item() != pytest.approx(gspo_loss.item())
