"""Pure pieces of the trainer group: GRPO groups by task id, token-balanced rank shares, mini-batches by
group id, the one-loop optimisation with a sharded batch, weight-version metrics, Ready and the Protocols."""

import torch

from toolrl.trainer.batch import build_batch
from toolrl.trainer.optimize import DataParallel, balanced_shares, mini_batches, rank_shares, sample_units
from toolrl.trainer.roles import Ready, RolloutEngines, RolloutJob, WeightUpdate
from toolrl.trainer.step import prompt_groups, weight_version_metrics


def _trajs(make_traj, lengths, n=2, task_ids=None):
    out = []
    for g, ln in enumerate(lengths):
        for k in range(n):
            tid = task_ids[g] if task_ids else f"t{g}"
            out.append(make_traj(tid, [1, 2, 3], list(range(4, 4 + ln + k)), [1] * (ln + k), sample=k))
    return out


def test_prompt_groups_come_from_task_id_and_sample_index_not_positions(make_traj):
    trajs = _trajs(make_traj, [2, 3])
    shuffled = [trajs[3], trajs[0], trajs[2], trajs[1]]
    assert prompt_groups(shuffled) == ["t1", "t0", "t1", "t0"]
    # the same task drawn twice in one step: one group per draw
    twice = _trajs(make_traj, [2, 2], task_ids=["a", "a"])
    assert prompt_groups(twice) == ["a", "a", "a#1", "a#1"]


def test_balanced_shares_put_the_heaviest_units_on_the_lightest_rank():
    shares = balanced_shares([10, 1, 1, 8, 2], 2)
    assert shares == [[0, 1], [2, 3, 4]]  # 10 -> r0, 8 -> r1, 2 -> r1, 1 -> r0 (tie: lower rank), 1 -> r1: 11 and 11
    assert balanced_shares([5], 3) == [[0], [], []]  # a rank may get nothing (it still joins the collectives)
    assert sorted(i for s in balanced_shares([3, 1, 4, 1, 5, 9, 2, 6], 3) for i in s) == list(range(8))


def test_rank_shares_keep_groups_whole_and_balance_tokens(make_traj):
    trajs = _trajs(make_traj, [10, 1, 1, 8])
    batch = build_batch(trajs, prompt_groups(trajs), [True] * len(trajs), pad_token_id=0)
    assert sample_units(batch, 2) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    shares = rank_shares(batch, 2, group_size=2)
    # group tokens (prompt 3 + response): t0 27, t1 9, t2 9, t3 23 -> rank 0: t0 + t2 = 36, rank 1: t3 + t1 = 32
    assert shares == [[0, 1, 4, 5], [2, 3, 6, 7]]
    assert rank_shares(batch, 1, 2) == [list(range(8))]


def test_mini_batches_follow_group_ids_even_when_groups_interleave(make_traj):
    trajs = _trajs(make_traj, [2, 3, 4])
    order = [0, 2, 1, 3, 4, 5]  # t0, t1, t0, t1, t2, t2
    trajs = [trajs[i] for i in order]
    batch = build_batch(trajs, prompt_groups(trajs), [True] * 6, pad_token_id=0)
    minis = mini_batches(batch, 2, group_size=2, generator=torch.Generator().manual_seed(0), shuffle=False)
    assert [m.group_ids for m in minis] == [["t0", "t0"], ["t1", "t1"], ["t2", "t2"]]


def test_one_rank_update_equals_the_sum_of_two_shards_in_process(tiny_llama, make_traj, make_config):
    """The loop's arithmetic without processes: rank r's loss on its share, divided by the whole mini-batch's
    denominator, summed over both ranks, gives the one-rank gradient (what the gloo all-reduce adds up)."""
    from toolrl.algorithms.losses import agg_denominator
    from toolrl.trainer.forward import response_logprobs
    from toolrl.trainer.optimize import loss_terms

    cfg = make_config(**{"rollout.n": 2})
    trajs = _trajs(make_traj, [3, 1, 5, 2])
    batch = build_batch(trajs, prompt_groups(trajs), [True] * 8, pad_token_id=0)
    batch.extras["advantages"] = torch.linspace(-1, 1, 8).unsqueeze(1) * batch.response_mask
    model = tiny_llama()
    denominator = agg_denominator(batch.response_mask, cfg.algorithm.loss_agg)

    def grads(part):
        model.zero_grad()
        lp, ent = response_logprobs(model, part.trimmed(), with_entropy=True)
        loss, _ = loss_terms(lp, ent, part.trimmed(), cfg.algorithm, cfg.kl_in, 0.0, denominator)
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    whole = grads(batch)
    shares = rank_shares(batch, 2, group_size=2)
    summed = [a + b for a, b in zip(grads(batch.select(shares[0])), grads(batch.select(shares[1])))]
    for a, b in zip(whole, summed):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert DataParallel().loss_scale == 1.0 and DataParallel(0, 4, sum_grads=False).loss_scale == 4.0
    assert DataParallel().sum_dicts({"a": 1.0}) == {"a": 1.0}


def test_weight_version_metrics_show_the_lag(make_traj):
    import dataclasses

    trajs = [dataclasses.replace(t, weight_version=v) for t, v in zip(_trajs(make_traj, [1, 1]), [3, 3, 2, 3])]
    assert weight_version_metrics(trajs, 3) == {"rollout/weight_version": 2.0, "rollout/weight_lag": 1.0}


class _InProcessEngines:
    """A RolloutEngines written against the Protocol alone (what a third-party engine pool would do)."""

    def __init__(self):
        self._version = 0

    @property
    def version(self):
        return self._version

    def rollout(self, job):
        return []

    def sync_weights(self, update):
        self._version = update.version
        return {"sync/seconds": 0.0}

    def sleep(self):
        pass

    def wake(self):
        pass

    def close(self):
        pass


def test_payloads_are_frozen_and_protocols_are_structural():
    import dataclasses

    import pytest

    job = RolloutJob(tasks=(), n=2, seed=1)
    assert job.temperature is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.n = 3  # type: ignore[misc]
    engines: RolloutEngines = _InProcessEngines()
    engines.sync_weights(WeightUpdate(version=4, state=None))
    assert engines.version == 4
    assert Ready(7).get() == 7
