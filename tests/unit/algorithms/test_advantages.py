"""Advantage estimators against values computed by hand (plain tensors)."""

from types import SimpleNamespace

import pytest
import torch

from toolrl.algorithms.advantages import AdvantageInput, gae, grpo, last_token_rewards, rloo, uses_critic


def _batch(scores, groups, mask=None, valid=None, values=None, token_rewards=None):
    scores = torch.tensor(scores, dtype=torch.float32)
    B = len(scores)
    mask = torch.ones(B, 3) if mask is None else torch.tensor(mask, dtype=torch.float32)
    valid = torch.ones(B, dtype=torch.bool) if valid is None else torch.tensor(valid)
    return AdvantageInput(scores, mask, groups, valid, token_rewards=token_rewards, values=values)


CFG = SimpleNamespace(norm_adv_by_std=True, gamma=1.0, lam=1.0)


def test_grpo_group_normalised_by_hand():
    b = _batch([1, 0, 0, 1, 2, 2, 2, 2], ["a"] * 4 + ["b"] * 4)
    adv = grpo(b, CFG).advantages
    # group a: mean 0.5, unbiased std sqrt(1/3); (1 - 0.5) / 0.57735 = 0.866025
    expected = torch.tensor([0.866025, -0.866025, -0.866025, 0.866025, 0, 0, 0, 0])
    assert torch.allclose(adv[:, 0], expected, atol=1e-4)
    assert torch.allclose(adv, adv[:, :1].expand_as(adv))  # same value on every token


def test_grpo_without_std_is_mean_centred():
    b = _batch([1, 0, 0, 1], ["a"] * 4)
    adv = grpo(b, SimpleNamespace(norm_adv_by_std=False)).advantages
    assert torch.allclose(adv[:, 0], torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_grpo_leaves_out_invalid_samples():
    b = _batch([1, 0, 5, 1], ["a"] * 4, valid=[True, True, False, True])
    adv = grpo(b, CFG).advantages[:, 0]
    # valid rewards 1, 0, 1: mean 2/3, unbiased std sqrt(1/3)
    assert adv[2] == 0
    assert torch.allclose(adv[[0, 1, 3]], torch.tensor([0.57735, -1.154700, 0.57735]), atol=1e-4)


def test_grpo_single_valid_sample_gets_zero():
    b = _batch([3.0, 1.0], ["a", "a"], valid=[True, False])
    assert torch.equal(grpo(b, CFG).advantages, torch.zeros(2, 3))


def test_grpo_respects_mask():
    b = _batch([1, 0], ["a", "a"], mask=[[1, 0, 1], [1, 1, 0]])
    adv = grpo(b, CFG).advantages
    assert adv[0, 1] == 0 and adv[1, 2] == 0
    assert adv[0, 0] > 0 and adv[1, 0] < 0


def test_rloo_by_hand():
    b = _batch([1, 0, 0, 1, 3, 0], ["a"] * 4 + ["b"] * 2)
    adv = rloo(b, CFG).advantages[:, 0]
    two_thirds = 2 / 3
    assert torch.allclose(adv, torch.tensor([two_thirds, -two_thirds, -two_thirds, two_thirds, 3.0, -3.0]), atol=1e-6)


def test_token_rewards_add_to_score():
    # per-token KL penalty summed over masked tokens joins the score
    tr = torch.tensor([[-0.1, -0.1, -5.0], [0.0, 0.0, 0.0]])
    b = _batch([1.0, 1.0], ["a", "a"], mask=[[1, 1, 0], [1, 1, 1]], token_rewards=tr)
    adv = rloo(b, CFG).advantages[:, 0]
    assert torch.allclose(adv, torch.tensor([-0.2, 0.2]), atol=1e-6)


def test_last_token_rewards_places_score_on_last_sampled_token():
    out = last_token_rewards(torch.tensor([2.0, 3.0, 4.0]), torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]))
    assert torch.equal(out, torch.tensor([[0, 2.0, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 0]]))


def test_gae_by_hand_skips_tool_tokens():
    # gamma 0.9, lambda 0.8; token 2 is a tool-result token (mask 0, value ignored)
    values = torch.tensor([[0.5, 0.4, 99.0, 0.2], [0.1, 0.1, 0.1, 0.1]])
    b = _batch([1.0, 0.0], ["a", "b"], mask=[[1, 1, 0, 1], [1, 1, 1, 1]], values=values)
    out = gae(b, SimpleNamespace(gamma=0.9, lam=0.8))
    # t3: delta = 1 - 0.2 = 0.8
    # t1: delta = 0.9*0.2 - 0.4 = -0.22; gae = -0.22 + 0.72*0.8 = 0.356
    # t0: delta = 0.9*0.4 - 0.5 = -0.14; gae = -0.14 + 0.72*0.356 = 0.11632
    raw0 = torch.tensor([0.11632, 0.356, 0.0, 0.8])
    assert torch.allclose(out.returns[0], raw0 + torch.tensor([0.5, 0.4, 0.0, 0.2]), atol=1e-5)
    assert out.returns[0, 2] == 0 and out.advantages[0, 2] == 0
    # second sample: reward 0 everywhere, values 0.1: deltas -0.01 at t3, -0.01 at others
    d = 0.9 * 0.1 - 0.1
    g3 = -0.1
    g2 = d + 0.72 * g3
    g1 = d + 0.72 * g2
    g0 = d + 0.72 * g1
    assert torch.allclose(out.returns[1], torch.tensor([g0, g1, g2, g3]) + 0.1, atol=1e-6)
    # advantages are the raw GAE values whitened over the masked tokens
    raw = torch.cat([raw0[[0, 1, 3]], torch.tensor([g0, g1, g2, g3])])
    whitened = (raw - raw.mean()) / raw.std()
    assert torch.allclose(out.advantages[out.advantages != 0], whitened, atol=1e-4)


def test_gae_with_kl_in_reward_and_gamma_one_is_reward_to_go_minus_value():
    values = torch.zeros(1, 3)
    tr = torch.tensor([[-0.1, -0.2, -0.3]])
    b = _batch([1.0], ["a"], values=values, token_rewards=tr)
    out = gae(b, SimpleNamespace(gamma=1.0, lam=1.0))
    assert torch.allclose(out.returns[0], torch.tensor([0.4, 0.5, 0.7]), atol=1e-6)


def test_gae_needs_values():
    with pytest.raises(ValueError, match="critic values"):
        gae(_batch([1.0], ["a"]), CFG)


def test_registered_estimators(plugin_manager):
    reg = plugin_manager.registry("advantage_estimators")
    assert {"grpo", "rloo", "ppo"} <= set(reg.names())
    assert uses_critic(reg.get("ppo")) and not uses_critic(reg.get("grpo"))
    b = _batch([1, 0], ["a", "a"])
    assert torch.allclose(reg.get("grpo")(b, CFG).advantages, grpo(b, CFG).advantages)


@pytest.mark.parametrize("value", [0.7, 1.2, 0.1, 1 / 3])
def test_a_group_whose_rewards_are_all_equal_gets_exactly_zero(value):
    """Eight equal float32 scores can have a mean an ulp away from them (1.2: off by 1.2e-7); divided by a std of
    the same size plus eps, GRPO used to give every sample of such a group an advantage of about 0.1."""
    from toolrl.algorithms.advantages import dr_grpo, reinforce_pp_baseline

    b = _batch([value] * 8 + [1.0, 0.0], ["same"] * 8 + ["mixed"] * 2)
    for estimator in (grpo, rloo, dr_grpo):
        adv = estimator(b, CFG).advantages[:, 0]
        assert torch.equal(adv[:8], torch.zeros(8)), estimator.__name__
        assert adv[8] > 0 > adv[9], estimator.__name__  # the other group still learns
    base = reinforce_pp_baseline(b, CFG).advantages
    assert torch.equal(base[:8], torch.zeros(8, 3))


def _loop_reference(scores, groups, valid, norm=True):
    """GRPO/RLOO/Dr. GRPO as a loop over the groups (the definition), for comparison."""
    by: dict = {}
    for i, (g, ok) in enumerate(zip(groups, valid)):
        if ok:
            by.setdefault(g, []).append(i)
    out = {k: torch.zeros(len(scores)) for k in ("grpo", "rloo", "dr_grpo")}
    for idx in by.values():
        g = scores[idx]
        if len(idx) < 2 or bool((g == g[0]).all()):
            continue
        out["grpo"][idx] = (g - g.mean()) / (g.std() + 1e-6) if norm else g - g.mean()
        out["rloo"][idx] = g - (g.sum() - g) / (len(idx) - 1)
        out["dr_grpo"][idx] = g - g.mean()
    return out


@pytest.mark.parametrize("seed", range(5))
def test_the_vectorised_group_estimators_match_a_loop_over_the_groups(seed):
    from toolrl.algorithms.advantages import dr_grpo

    gen = torch.Generator().manual_seed(seed)
    B = 96
    # groups of uneven size in a shuffled order, some excluded samples, a few one-sample and constant groups
    groups = [f"g{int(k)}" for k in torch.randint(0, 20, (B,), generator=gen)]
    valid = (torch.rand(B, generator=gen) > 0.15).tolist()
    scores = torch.randint(0, 4, (B,), generator=gen).to(torch.float32) * 0.3
    scores[[not v for v in valid]] = float("nan")  # an excluded sample's score must never be read
    ref = _loop_reference(scores, groups, valid)
    b = _batch(scores.tolist(), groups, valid=valid)
    for name, fn in (("grpo", grpo), ("rloo", rloo), ("dr_grpo", dr_grpo)):
        got = fn(b, CFG).advantages[:, 0]
        assert not got.isnan().any(), name
        assert torch.allclose(got, ref[name], atol=1e-5), name
    got = grpo(b, SimpleNamespace(norm_adv_by_std=False)).advantages[:, 0]
    assert torch.allclose(got, _loop_reference(scores, groups, valid, norm=False)["grpo"], atol=1e-6)


def test_group_stats_reports_each_samples_group_and_checks_lengths():
    from toolrl.algorithms.advantages import group_stats

    st = group_stats(torch.tensor([1.0, 3.0, 5.0, 2.0, 9.0]), ["a", "a", "b", "a", "c"],
                     torch.tensor([True, True, True, False, False]))
    assert st.member.tolist() == [True, True, True, False, False]
    assert st.count.tolist() == [2, 2, 1, 0, 0]
    assert st.mean[:3].tolist() == [2.0, 2.0, 5.0] and st.total[:3].tolist() == [4.0, 4.0, 5.0]
    assert torch.allclose(st.std, torch.tensor([2 ** 0.5, 2 ** 0.5, 0.0, 0.0, 0.0]))
    assert st.informative.tolist() == [True, True, False, False, False]
    empty = group_stats(torch.zeros(0), [], torch.zeros(0, dtype=torch.bool))
    assert empty.count.shape == (0,) and not empty.informative.any()
    with pytest.raises(ValueError, match="3 scores but 2 group ids"):
        group_stats(torch.zeros(3), ["a", "a"], torch.ones(3, dtype=torch.bool))


def test_whitening_equal_values_gives_exactly_zero():
    """reinforce_pp and ppo whiten over the batch: equal entries used to come out at about 1e-3 (an ulp in the
    mean times 1 / sqrt(1e-8)); now exactly 0, and unequal entries still get mean 0 and std 1."""
    from toolrl.algorithms.losses import masked_whiten

    mask = torch.ones(4, 5)
    mask[0, 3:] = 0
    for value in (1.2, 0.7):
        assert torch.equal(masked_whiten(torch.full((4, 5), value), mask), torch.zeros(4, 5))
    assert torch.equal(masked_whiten(torch.ones(2, 2), torch.zeros(2, 2)), torch.zeros(2, 2))  # nothing masked in
    v = torch.arange(20.0).reshape(4, 5) * 0.1
    w = masked_whiten(v, mask)
    picked = w[mask > 0]
    assert abs(float(picked.mean())) < 1e-5 and abs(float(picked.std()) - 1) < 1e-4 and w[0, 4] == 0
