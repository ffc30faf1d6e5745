"""DAPO overlong shaping and dynamic sampling selection, by hand."""

import pytest

from toolrl.algorithms.shaping import Draw, dynamic_sample, informative_groups, overlong_penalties, overlong_penalty


def test_overlong_penalty_by_hand():
    # L_max 100, buffer 20: no penalty up to 80, linear to -1 at 100, -1 beyond
    assert overlong_penalties([10, 80, 81, 90, 100, 120], 100, 20) == pytest.approx([0, 0, -0.05, -0.5, -1, -1])
    assert overlong_penalty(90, 100, 20, factor=0.5) == pytest.approx(-0.25)
    assert overlong_penalty(100, 100, 0) == 0.0 and overlong_penalty(101, 100, 0) == -1.0
    with pytest.raises(ValueError, match="buffer"):
        overlong_penalty(10, 100, 101)


def test_informative_groups_ignore_excluded_samples():
    scores = [1, 0, 1, 1, None, 1, 0.5, None]
    groups = ["a", "a", "b", "b", "c", "c", "d", "d"]
    # a differs; b ties; c has one included sample; d has one included sample
    assert informative_groups(scores, groups) == ["a"]


def _draws(rounds):
    def draw(k):
        scores, groups = rounds[k]
        return Draw([f"{k}:{i}" for i in range(len(scores))], scores, [f"{k}:{g}" for g in groups])

    return draw


def test_dynamic_sample_draws_until_full_and_keeps_the_batch_size():
    rounds = [
        ([1, 1, 0, 1], ["a", "a", "b", "b"]),  # b informative
        ([0, 0, 1, 0], ["a", "a", "b", "b"]),  # b informative
        ([1, 0, 1, 0], ["a", "a", "b", "b"]),  # never reached
    ]
    out = dynamic_sample(_draws(rounds), target=2, max_draws=3)
    assert out.draws == 2 and out.full and out.groups_kept == 2 and out.groups_seen == 4
    assert out.samples == ["0:2", "0:3", "1:2", "1:3"]
    assert out.group_ids == ["0:b", "0:b", "1:b", "1:b"]
    assert out.metrics()["rollout/dynamic_sampling_draws"] == 2.0


def test_dynamic_sample_truncates_extra_groups():
    out = dynamic_sample(_draws([([1, 0, 1, 0, 1, 0], ["a", "a", "b", "b", "c", "c"])]), target=2, max_draws=1)
    assert out.group_ids == ["0:a", "0:a", "0:b", "0:b"] and out.full


def test_dynamic_sample_stops_at_the_cap():
    rounds = [([1, 1], ["a", "a"]), ([1, 0], ["a", "a"]), ([0, 1], ["a", "a"])]
    out = dynamic_sample(_draws(rounds), target=3, max_draws=2)
    assert out.draws == 2 and not out.full and out.groups_kept == 1 and out.samples == ["1:0", "1:1"]


def test_dynamic_sample_falls_back_to_the_first_round_when_nothing_is_informative():
    out = dynamic_sample(_draws([([1, 1], ["a", "a"]), ([0, 0], ["a", "a"])]), target=1, max_draws=2)
    assert out.draws == 2 and out.groups_kept == 0 and out.samples == ["0:0", "0:1"]
    assert out.metrics()["rollout/dynamic_sampling_full"] == 0.0
