"""toolrl.trainer.segments: an agent program's earlier segments become training rows with the episode's advantage.

The end-to-end check (SmolLM2, the endpoint on loopback, a program that rewrites its history, a real
update) is plugins/envs/program/tests/test_program_segments_train.py.
"""

from __future__ import annotations

import pytest
import torch

from toolrl.algorithms.advantages import AdvantageInput, dr_grpo, gae, grpo, reinforce_pp, rloo
from toolrl.config import load_config
from toolrl.errors import ToolrlError
from toolrl.trainer.batch import build_batch
from toolrl.trainer.segments import episode_advantages, segment_metrics, segment_rows
from toolrl.types import Segment, Trajectory


def traj(task: str, sample: int, prompt, response, mask, segments=(), version=0) -> Trajectory:
    return Trajectory(task_id=task, sample_index=sample, prompt_ids=tuple(prompt), response_ids=tuple(response),
                      loss_mask=tuple(mask), logprobs=tuple(-0.5 if k else 0.0 for k in mask),
                      messages=({"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}),
                      num_prompt_messages=1, segments=tuple(segments), weight_version=version)


def seg(prompt, response, mask) -> Segment:
    return Segment(tuple(prompt), tuple(response), tuple(mask), tuple(-0.25 if k else 0.0 for k in mask))


@pytest.fixture
def episodes():
    """Group "a": sample 0 rewrote its history twice (two earlier segments), sample 1 never did;
    group "b": one sample with one earlier segment (with a masked tool message), one without."""
    return [
        traj("a", 0, [1, 2], [10, 11], [1, 1], [seg([1, 3], [12, 13, 14], [1, 1, 1]), seg([1, 4], [15], [1])],
             version=3),
        traj("a", 1, [1, 2], [20, 21, 22], [1, 1, 1], version=3),
        traj("b", 0, [5], [30], [1], [seg([5, 6, 7], [31, 40, 41, 32], [1, 0, 0, 1])], version=3),
        traj("b", 1, [5], [33, 34], [1, 1], version=3),
    ]


def test_rows_are_the_episodes_then_their_segments(episodes):
    rows = segment_rows(episodes, ["a", "a", "b", "b"], [True, True, False, True])
    assert rows.num_episodes == 4 and len(rows) == 7 and rows.has_segments
    assert rows.trajectories[:4] == tuple(episodes)  # the episodes' rows are the trajectories themselves
    assert rows.episode == (0, 1, 2, 3, 0, 0, 2)
    assert rows.group_ids == ("a", "a", "b", "b", "a", "a", "b")
    assert rows.valid == (True, True, False, True, True, True, False)  # a segment is valid iff its episode is
    for row, s in zip(rows.trajectories[4:], [*episodes[0].segments, *episodes[2].segments]):
        assert (row.prompt_ids, row.response_ids, row.loss_mask, row.logprobs) == \
               (s.prompt_ids, s.response_ids, s.loss_mask, s.logprobs)
        assert row.weight_version == 3 and row.segments == ()
    assert segment_metrics(rows) == {"rollout/segments_per_episode": 7 / 4, "rollout/segment_rows": 3.0}
    # the batch holds every segment's tokens exactly, trained where they were sampled
    b = build_batch(rows.trajectories, rows.group_ids, rows.valid, 0)
    assert len(b) == 7 and b.response_ids[6, :4].tolist() == [31, 40, 41, 32]
    assert b.response_mask[4, :3].tolist() == [1, 1, 1] and b.response_mask[6].sum() == 0  # episode 2 is invalid
    assert b.input_ids[5, b.prompt_width - 2 : b.prompt_width + 1].tolist() == [1, 4, 15]


def test_without_segments_nothing_changes(episodes):
    plain = [episodes[1], episodes[3]]
    rows = segment_rows(plain, ["a", "b"], [True, True])
    assert not rows.has_segments and rows.trajectories == tuple(plain)
    b = build_batch(rows.trajectories, rows.group_ids, rows.valid, 0)
    inp = AdvantageInput(scores=torch.tensor([1.0, 0.0]), response_mask=b.response_mask, group_ids=["a", "b"],
                         valid=b.valid)
    cfg = load_config(None, []).algorithm
    assert torch.equal(episode_advantages(grpo, inp, cfg, rows).advantages, grpo(inp, cfg).advantages)


@pytest.mark.parametrize("estimator", [grpo, rloo, dr_grpo, reinforce_pp])
def test_every_segment_gets_its_episodes_advantage(episodes, estimator):
    """Outcome estimators: the episodes' advantages are what the estimator gives on the episodes alone, and
    every earlier segment carries its episode's number on its sampled tokens (0 on context tokens)."""
    valid = [True, True, True, True]
    rows = segment_rows(episodes, ["a", "a", "b", "b"], valid)
    b = build_batch(rows.trajectories, rows.group_ids, rows.valid, 0)
    scores = torch.tensor([1.0, 0.0, 0.2, 0.7])
    cfg = load_config(None, []).algorithm
    out = episode_advantages(estimator, AdvantageInput(scores=scores, response_mask=b.response_mask,
                                                       group_ids=list(rows.group_ids), valid=b.valid), cfg, rows)
    alone = build_batch(episodes, ["a", "a", "b", "b"], valid, 0)
    expected = estimator(AdvantageInput(scores=scores, response_mask=alone.response_mask,
                                        group_ids=["a", "a", "b", "b"], valid=alone.valid), cfg).advantages
    T = alone.response_width
    assert torch.allclose(out.advantages[:4, :T], expected * alone.response_mask, atol=1e-6)
    assert out.advantages[:4, T:].abs().sum() == 0
    per_episode = [float(expected[i][alone.response_mask[i] > 0][0]) for i in range(4)]
    assert per_episode[0] != 0 and per_episode[2] != 0
    for r in range(4, 7):
        ep = rows.episode[r]
        m = b.response_mask[r]
        assert torch.allclose(out.advantages[r][m > 0], torch.full((int(m.sum()),), per_episode[ep]), atol=1e-6)
        assert out.advantages[r][m == 0].abs().sum() == 0
    assert out.advantages[6, :4].tolist()[1:3] == [0.0, 0.0]  # the tool message inside segment 0 of episode 2


def test_segment_kl_penalty_counts_in_the_episode_score(episodes):
    """kl_in=reward: an episode's score is its reward plus the penalty on all of its segments' tokens."""
    rows = segment_rows(episodes, ["a", "a", "b", "b"], [True] * 4)
    b = build_batch(rows.trajectories, rows.group_ids, rows.valid, 0)
    token_rewards = -0.1 * b.response_mask  # -0.1 per sampled token
    cfg = load_config(None, ["algorithm.norm_adv_by_std=false"]).algorithm
    scores = torch.tensor([1.0, 1.0, 0.0, 0.0])
    out = episode_advantages(grpo, AdvantageInput(scores=scores, response_mask=b.response_mask,
                                                  group_ids=list(rows.group_ids), valid=b.valid,
                                                  token_rewards=token_rewards), cfg, rows)
    # episode scores: a0 = 1 - 0.1 * (2 + 3 + 1) = 0.4, a1 = 1 - 0.3 = 0.7; b0 = -0.1 * (1 + 2) = -0.3, b1 = -0.2
    adv = [float(out.advantages[i][b.response_mask[i] > 0][0]) for i in range(4)]
    assert adv == pytest.approx([-0.15, 0.15, -0.05, 0.05], abs=1e-6)
    assert float(out.advantages[4][b.response_mask[4] > 0][0]) == pytest.approx(-0.15, abs=1e-6)


def test_critic_estimator_with_segments_is_a_clear_error(episodes):
    rows = segment_rows(episodes, ["a", "a", "b", "b"], [True] * 4)
    b = build_batch(rows.trajectories, rows.group_ids, rows.valid, 0)
    inp = AdvantageInput(scores=torch.ones(4), response_mask=b.response_mask, group_ids=list(rows.group_ids),
                         valid=b.valid, values=torch.zeros_like(b.response_mask))
    with pytest.raises(ToolrlError) as err:
        episode_advantages(gae, inp, load_config(None, []).algorithm, rows)
    text = str(err.value)
    assert "algorithm.advantage" in text and "3 earlier segment(s)" in text and "grpo" in text
    # the same estimator is fine where no episode has segments
    plain = segment_rows([episodes[1], episodes[3]], ["a", "b"], [True, True])
    pb = build_batch(plain.trajectories, plain.group_ids, plain.valid, 0)
    out = episode_advantages(gae, AdvantageInput(scores=torch.ones(2), response_mask=pb.response_mask,
                                                 group_ids=["a", "b"], valid=pb.valid,
                                                 values=torch.zeros_like(pb.response_mask)),
                             load_config(None, []).algorithm, plain)
    assert out.returns is not None


def test_mismatched_inputs_are_refused(episodes):
    with pytest.raises(ToolrlError, match="one group id"):
        segment_rows(episodes, ["a"], [True] * 4)
    rows = segment_rows(episodes, ["a", "a", "b", "b"], [True] * 4)
    alone = build_batch(episodes, ["a", "a", "b", "b"], [True] * 4, 0)  # a batch without the segment rows
    with pytest.raises(ToolrlError, match="segment_rows"):
        episode_advantages(grpo, AdvantageInput(scores=torch.ones(4), response_mask=alone.response_mask,
                                                group_ids=["a", "a", "b", "b"], valid=alone.valid),
                           load_config(None, []).algorithm, rows)
