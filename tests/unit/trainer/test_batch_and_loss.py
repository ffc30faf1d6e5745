"""The batch layout, and the loss mask: tool-result tokens get exactly zero gradient (real tiny model)."""

import pytest
import torch

from toolrl.algorithms.losses import entropy_from_logits, logprobs_from_logits
from toolrl.trainer.batch import build_batch
from toolrl.trainer.forward import response_logits, response_logprobs
from toolrl.trainer.optimize import loss_terms, update_critic, update_policy


def test_build_batch_layout(make_traj):
    trajs = [make_traj("a", [5, 6, 7], [8, 9, 10, 11], [1, 0, 0, 1]), make_traj("b", [5], [12, 13], [1, 1])]
    b = build_batch(trajs, ["0", "1"], [True, False], pad_token_id=0)
    assert b.prompt_width == 3 and b.response_width == 4
    assert b.input_ids.tolist() == [[5, 6, 7, 8, 9, 10, 11], [0, 0, 5, 12, 13, 0, 0]]
    assert b.attention_mask.tolist() == [[1] * 7, [0, 0, 1, 1, 1, 0, 0]]
    assert b.position_ids[1].tolist()[2:5] == [0, 1, 2]  # positions count real tokens only
    assert b.response_mask.tolist() == [[1, 0, 0, 1], [0, 0, 0, 0]]  # excluded sample: all 0
    t = b.select([1]).trimmed()
    assert t.input_ids.tolist() == [[5, 12, 13]] and t.prompt_width == 1 and t.response_width == 2


def _padded_one_by_one(trajs, valid, pad):
    """build_batch's layout written sample by sample (the reference for the vectorised build)."""
    P = max(len(t.prompt_ids) for t in trajs)
    T = max(max(len(t.response_ids) for t in trajs), 1)
    ids = [[pad] * (P + T) for _ in trajs]
    att = [[0] * (P + T) for _ in trajs]
    mask = [[0.0] * T for _ in trajs]
    lps = [[0.0] * T for _ in trajs]
    for i, t in enumerate(trajs):
        p, r = len(t.prompt_ids), len(t.response_ids)
        ids[i][P - p:P], att[i][P - p:P] = list(t.prompt_ids), [1] * p
        ids[i][P:P + r], att[i][P:P + r] = list(t.response_ids), [1] * r
        lps[i][:r] = list(t.logprobs)
        mask[i][:r] = [float(m) for m in t.loss_mask] if valid[i] else [0.0] * r
    return ids, att, mask, lps


def test_build_batch_matches_a_sample_by_sample_layout_on_ragged_samples(make_traj):
    import random

    rng = random.Random(3)
    for trial in range(20):
        trajs, valid = [], []
        for i in range(rng.randint(1, 9)):
            p, r = rng.randint(1, 12), rng.choice([0, 1, rng.randint(2, 15)])
            trajs.append(make_traj(f"t{i}", [rng.randint(1, 50) for _ in range(p)],
                                   [rng.randint(1, 50) for _ in range(r)], [rng.randint(0, 1) for _ in range(r)],
                                   logprobs=[-rng.random() - 0.01 for _ in range(r)]))
            valid.append(rng.random() > 0.2)
        b = build_batch(trajs, [str(i) for i in range(len(trajs))], valid, pad_token_id=63)
        ids, att, mask, lps = _padded_one_by_one(trajs, valid, 63)
        assert b.input_ids.tolist() == ids, trial
        assert b.attention_mask.tolist() == att, trial
        assert b.response_mask.tolist() == mask, trial
        assert torch.allclose(b["rollout_logprobs"], torch.tensor(lps)), trial
        assert b.response_ids.tolist() == [row[b.prompt_width:] for row in ids]
        assert b.valid.tolist() == valid
        assert all(b.position_ids[i, j] == max(sum(att[i][:j + 1]) - 1, 0) for i in range(len(trajs))
                   for j in range(len(ids[0])))


def test_padding_does_not_change_logprobs(tiny_llama, make_traj):
    model = tiny_llama()
    a = make_traj("a", [5, 6, 7], [8, 9, 10], [1, 1, 1])
    alone = build_batch([a], ["0"], [True], 0)
    padded = build_batch([a, make_traj("b", [1, 2, 3, 4, 5, 6], [7] * 9, [1] * 9)], ["0", "1"], [True, True], 0)
    lp_alone, _ = response_logprobs(model, alone)
    lp_padded, _ = response_logprobs(model, padded)
    assert torch.allclose(lp_alone[0], lp_padded[0, :3], atol=1e-5)


def _tool_batch(make_traj, advantages_at_tool=0.0):
    # response: 3 sampled tokens, 3 tool-result tokens (mask 0), 2 sampled tokens
    mask = [1, 1, 1, 0, 0, 0, 1, 1]
    trajs = [make_traj("a", [3, 4, 5], [10, 11, 12, 40, 41, 42, 13, 14], mask),
             make_traj("a", [3, 4, 5], [20, 21, 22, 40, 41, 42, 23, 2], mask, sample=1)]
    b = build_batch(trajs, ["0", "0"], [True, True], 0)
    m = torch.tensor(mask, dtype=torch.float32)
    adv = torch.tensor([[1.0], [-1.0]]) * m + advantages_at_tool * (1 - m)
    b.extras["advantages"] = adv
    b.extras["ref_logprobs"] = torch.full((2, 8), -3.0) + (1 - m) * 17.0  # garbage on tool tokens
    b.extras["old_logprobs"] = torch.full((2, 8), -4.0) * m + (1 - m) * 9.0
    return b


def test_loss_mask_gives_zero_gradient_on_tool_tokens(tiny_llama, make_traj, make_config):
    cfg = make_config(**{"algorithm.kl_coef": 0.1, "algorithm.entropy_coef": 0.01, "algorithm.kl_estimator": "k3"})
    model = tiny_llama()
    b = _tool_batch(make_traj)
    logits = response_logits(model, b)
    logits.retain_grad()
    logprobs = logprobs_from_logits(logits, b.response_ids)
    entropy = entropy_from_logits(logits)
    loss, stats = loss_terms(logprobs, entropy, b, cfg.algorithm, "loss", 0.1, float(b.response_mask.sum()))
    assert "loss/kl" in stats and "loss/entropy" in stats  # every term is active
    loss.backward()
    g = logits.grad.abs().sum(-1)  # [B, T]: gradient reaching each position's logits
    tool = b.response_mask == 0
    assert torch.all(g[tool] == 0), "tool-result tokens must receive no gradient"
    assert torch.all(g[~tool] > 0), "every sampled token must receive gradient"


def test_values_on_tool_tokens_do_not_change_parameter_gradients(tiny_llama, make_traj, make_config):
    cfg = make_config(**{"algorithm.kl_coef": 0.1, "algorithm.entropy_coef": 0.01})
    grads = []
    for at_tool in (0.0, 123.0):
        model = tiny_llama()
        b = _tool_batch(make_traj, advantages_at_tool=at_tool)
        lp, ent = response_logprobs(model, b, with_entropy=True, entropy_grad=True)
        loss, _ = loss_terms(lp, ent, b, cfg.algorithm, "loss", 0.1, float(b.response_mask.sum()))
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.equal(grads[0], grads[1])


def _sgd_delta(model_fn, batch, cfg, micro):
    model = model_fn()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    cfg.trainer.micro_batch_size = micro
    update_policy(model, opt, batch, cfg, kl_coef=0.0, seed=0)
    return torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])


def test_gradient_accumulation_equals_full_batch(tiny_llama, make_traj, make_config):
    trajs = [make_traj("a", [3, 4, 5], [10 + i, 11, 12 + i, 13][: 2 + i % 3], [1] * (2 + i % 3), sample=i)
             for i in range(4)]
    for agg in ("token-mean", "seq-mean"):
        cfg = make_config(**{"rollout.n": 4, "data.prompts_per_step": 1, "trainer.max_grad_norm": 1e9,
                             "algorithm.loss_agg": agg})
        b = build_batch(trajs, ["0"] * 4, [True] * 4, 0)
        b.extras["advantages"] = torch.tensor([[1.0], [-0.5], [0.25], [-0.75]]) * b.response_mask
        full = _sgd_delta(tiny_llama, b, cfg, micro=4)
        accumulated = _sgd_delta(tiny_llama, b, cfg, micro=1)
        assert full.abs().sum() > 0
        assert torch.allclose(full, accumulated, atol=1e-6), agg


def test_update_policy_raises_logprob_of_advantaged_samples(tiny_llama, make_traj, make_config):
    cfg = make_config(**{"rollout.n": 2, "data.prompts_per_step": 1, "trainer.lr": 1e-2, "trainer.ppo_epochs": 2,
                         "trainer.micro_batch_size": 2})
    model = tiny_llama()
    good = make_traj("a", [3, 4], [30, 31, 32], [1, 1, 1])
    bad = make_traj("a", [3, 4], [50, 51, 52], [1, 1, 1], sample=1)
    b = build_batch([good, bad], ["0", "0"], [True, True], 0)
    b.extras["advantages"] = torch.tensor([[1.0], [-1.0]]) * b.response_mask
    with torch.no_grad():
        b.extras["old_logprobs"] = response_logprobs(model, b)[0]
    before = b["old_logprobs"].sum(-1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    stats = update_policy(model, opt, b, cfg, kl_coef=0.0, seed=0)
    with torch.no_grad():
        after = response_logprobs(model, b)[0].sum(-1)
    assert after[0] > before[0] and after[1] < before[1]
    assert stats["actor/clip_frac"] >= 0 and stats["actor/grad_norm"] > 0 and "loss/policy" in stats


def test_update_critic_lowers_value_loss(tiny_llama, make_traj, make_config):
    from transformers import LlamaModel

    from toolrl.trainer.forward import batched_values
    from toolrl.trainer.modeling import CriticModel

    cfg = make_config(**{"algorithm.advantage": "ppo", "rollout.n": 1, "data.prompts_per_step": 2,
                         "trainer.micro_batch_size": 2, "trainer.ppo_epochs": 4})
    torch.manual_seed(0)
    backbone = LlamaModel(tiny_llama().config)
    critic = CriticModel(backbone, 32)
    b = build_batch([make_traj("a", [3, 4], [30, 31, 32], [1, 1, 1]), make_traj("b", [3], [50, 51], [1, 1])],
                    ["0", "1"], [True, True], 0)
    b.extras["values"] = batched_values(critic, b, 2)
    b.extras["returns"] = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]]) * b.response_mask
    opt = torch.optim.AdamW(critic.parameters(), lr=1e-2)
    first = update_critic(critic, opt, b, cfg, seed=0)["loss/value"]
    for _ in range(5):
        b.extras["values"] = batched_values(critic, b, 2)
        last = update_critic(critic, opt, b, cfg, seed=0)["loss/value"]
    assert last < first * 0.5


def test_shared_prompt_pass_gives_the_same_logprobs_and_gradients(tiny_llama, make_traj):
    from toolrl.trainer.forward import prompt_runs

    trajs = [make_traj("a", [3, 4, 5, 6], [10, 11, 12], [1, 1, 1]), make_traj("a", [3, 4, 5, 6], [13, 14], [1, 1], 1),
             make_traj("a", [3, 4, 5, 6], [15], [1], 2), make_traj("b", [7, 8], [16, 17, 18, 19], [1, 0, 1, 1]),
             make_traj("b", [7, 8], [20, 21, 22, 23], [1, 1, 1, 1], 1), make_traj("c", [9], [24, 25], [1, 1])]
    b = build_batch(trajs, ["0", "0", "0", "1", "1", "2"], [True] * 6, 0)
    assert prompt_runs(b) == [3, 2, 1]
    results = []
    for share in (False, True):
        model = tiny_llama()
        lp, ent = response_logprobs(model, b, temperature=0.7, with_entropy=True, entropy_grad=True,
                                    share_prompt=share)
        ((lp * b.response_mask).sum() + 0.1 * (ent * b.response_mask).sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((lp.detach() * b.response_mask, grads))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-5)


def test_shared_prompt_critic_values_match(tiny_llama, make_traj):
    from transformers import LlamaModel

    from toolrl.trainer.forward import critic_values
    from toolrl.trainer.modeling import CriticModel

    trajs = [make_traj("a", [3, 4, 5], [10, 11, 12], [1, 1, 1]), make_traj("a", [3, 4, 5], [13], [1], 1),
             make_traj("b", [7, 8, 9, 2], [16, 17], [1, 1])]
    b = build_batch(trajs, ["0", "0", "1"], [True] * 3, 0)
    out = []
    for share in (False, True):
        torch.manual_seed(1)
        critic = CriticModel(LlamaModel(tiny_llama().config), 32)
        v = critic_values(critic, b, share)
        (v * b.response_mask).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in critic.parameters() if p.grad is not None])
        out.append((v.detach() * b.response_mask, grads))
    assert torch.allclose(out[0][0], out[1][0], atol=1e-5) and torch.allclose(out[0][1], out[1][1], atol=1e-5)


def test_trainer_logits_chunk_reaches_the_update_and_the_logprob_passes(tiny_llama, make_traj, make_config,
                                                                        monkeypatch):
    """trainer.logits_chunk sets how many response tokens' logits exist at once, in the update and in the
    no-grad passes (old/reference logprobs); the results do not depend on it."""
    from toolrl.trainer import forward

    seen: list[int] = []
    real = forward.chunked_logprobs

    def spy(*args, chunk, **kwargs):
        seen.append(chunk)
        return real(*args, chunk=chunk, **kwargs)

    monkeypatch.setattr(forward, "chunked_logprobs", spy)
    trajs = [make_traj("a", [3, 4], [30 + i + k for k in range(20)], [1] * 20, sample=i) for i in range(2)]
    b = build_batch(trajs, ["0", "0"], [True, True], 0)
    b.extras["advantages"] = torch.tensor([[1.0], [-1.0]]) * b.response_mask
    lps = {}
    for chunk in (16, 64):
        cfg = make_config(**{"rollout.n": 2, "data.prompts_per_step": 1, "trainer.micro_batch_size": 2,
                             "trainer.logits_chunk": chunk})
        model = tiny_llama()
        seen.clear()
        lps[chunk] = forward.batched_logprobs(model, b, 2, logits_chunk=cfg.trainer.logits_chunk)
        assert seen and set(seen) == {chunk}
        seen.clear()
        update_policy(model, torch.optim.SGD(model.parameters(), lr=0.1), b, cfg, kl_coef=0.0, seed=0)
        assert seen and set(seen) == {chunk}
    assert torch.allclose(lps[16], lps[64], atol=1e-6)



def _runs_by_loop(ids, mask):
    """The definition: runs of consecutive samples whose prompt ids and mask equal the run's first sample's."""
    runs, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or not (torch.equal(ids[i], ids[start]) and torch.equal(mask[i], mask[start])):
            runs.append(i - start)
            start = i
    return runs if runs and max(runs) > 1 else None


class _PromptBatch:
    """What prompt_runs reads of a TrainBatch: ids, mask, the prompt width and the length."""

    def __init__(self, ids, mask):
        n = ids.shape[0]
        self.input_ids = torch.cat([ids, torch.zeros(n, 2, dtype=torch.long)], 1)  # two response columns
        self.attention_mask = torch.cat([mask, torch.ones(n, 2, dtype=torch.long)], 1)
        self.prompt_width = ids.shape[1]

    def __len__(self):
        return self.input_ids.shape[0]


@pytest.mark.parametrize("seed", range(6))
def test_prompt_runs_match_a_sample_by_sample_comparison(seed):
    """prompt_runs compares all samples at once; the runs are those of the per-sample loop, including prompts
    that differ only in their mask (left padding) and batches of one sample or none."""
    from toolrl.trainer.forward import prompt_runs

    gen = torch.Generator().manual_seed(seed)
    n, P = int(torch.randint(0, 12, (1,), generator=gen)), int(torch.randint(0, 5, (1,), generator=gen))
    kinds = torch.randint(0, 3, (n,), generator=gen)  # few prompt kinds, so neighbours often repeat
    ids = torch.stack([torch.full((P,), int(k)) for k in kinds]) if n else torch.zeros(0, P, dtype=torch.long)
    mask = torch.ones(n, P, dtype=torch.long)
    if n > 2 and P:
        mask[n // 2, 0] = 0  # the same ids with different padding: a run of its own
    got = prompt_runs(_PromptBatch(ids, mask))
    assert got == _runs_by_loop(ids, mask)
    assert got is None or sum(got) == n


def test_loss_statistics_stay_tensors_until_the_step_ends(tiny_llama, make_traj, make_config, monkeypatch):
    """A micro-batch's statistics are detached tensors (reading one back would make the host wait for the device
    between the forward and the backward); the accumulator reads a whole optimizer step's at once, and its means
    equal those of the same statistics given as floats."""
    from toolrl.trainer import optimize
    from toolrl.trainer.optimize import DataParallel, StatAccumulator, read_floats

    cfg = make_config(**{"rollout.n": 2, "data.prompts_per_step": 2, "trainer.micro_batch_size": 2})
    model = tiny_llama()
    trajs = [make_traj(g, [3, 4], [30 + i, 31, 32], [1, 1, 1], sample=i % 2) for i, g in enumerate("aabb")]
    b = build_batch(trajs, ["0", "0", "1", "1"], [True] * 4, 0)
    b.extras["advantages"] = torch.tensor([[1.0], [-1.0], [0.5], [-0.5]]) * b.response_mask
    with torch.no_grad():
        b.extras["old_logprobs"] = response_logprobs(model, b)[0]
    lp, ent = response_logprobs(model, b, with_entropy=True)
    _, stats = loss_terms(lp, ent, b, cfg.algorithm, "loss", 0.0, float(b.response_mask.sum()))
    assert stats and all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad
                         for v in stats.values()), stats

    reads = []
    real = optimize.read_floats
    monkeypatch.setattr(optimize, "read_floats", lambda values: reads.append(len(values)) or real(values))
    out = update_policy(model, torch.optim.AdamW(model.parameters(), lr=1e-3), b, cfg, kl_coef=0.0, seed=0)
    assert len(reads) == 1 and reads[0] >= 2 * len(stats)  # one read for the step's two micro-batches
    assert all(isinstance(v, float) for v in out.values())

    as_tensors, as_floats = StatAccumulator(DataParallel()), StatAccumulator(DataParallel())
    for weight, (kl, loss) in ((3.0, (0.5, 2.0)), (1.0, (0.1, 1.0))):
        as_tensors.add({"actor/kl": torch.tensor(kl), "loss/total": torch.tensor(loss)}, weight)
        as_floats.add({"actor/kl": kl, "loss/total": loss}, weight)
    with pytest.raises(RuntimeError, match="before end_step"):
        as_tensors.result()
    as_tensors.end_step(**{"actor/grad_norm": 1.0})
    as_floats.end_step(**{"actor/grad_norm": 1.0})
    assert as_tensors.result() == pytest.approx(as_floats.result())
    assert as_floats.result()["actor/kl"] == pytest.approx((3 * 0.5 + 0.1) / 4)
    assert read_floats([1.0, torch.tensor(2.5), 3, torch.tensor([4.0])]) == [1.0, 2.5, 3.0, 4.0]
