"""Rejection sampling and best/worst pairs from scored samples (the selection behind toolrl data sft / dpo)."""

from toolrl.trainer.offline_data import Scored, best_conversations, best_worst_pairs
from toolrl.types import RewardResult, Task, Trajectory

TASK = Task(id="t", messages=({"role": "user", "content": "q"},))


def _traj(i, text, infra=False):
    msgs = ({"role": "user", "content": "q"}, {"role": "assistant", "content": text})
    return Trajectory("t", i, (1,), (2,), (1,), (0.0,), msgs, 1, infra_error=infra)


def _scored(rows):
    return [Scored(TASK, [(_traj(i, text, infra), RewardResult(r), c) for i, (text, r, c, infra) in enumerate(rows)])]


def test_rejection_sampling_keeps_the_best_correct_sample():
    s = _scored([("a", 1.0, True, False), ("b", 1.2, True, False), ("c", 5.0, False, False), ("d", 9.0, True, True)])
    [conv] = best_conversations(s)
    assert conv.messages[-1]["content"] == "b" and conv.metadata["reward"] == 1.2  # d failed in the sandbox
    assert best_conversations(_scored([("a", 0.0, False, False)])) == []


def test_pairs_take_best_and_worst_and_skip_ties():
    s = _scored([("a", 0.2, False, False), ("b", 1.0, True, False), ("c", None, False, False), ("d", 0.0, False, False)])
    [pair] = best_worst_pairs(s)
    assert pair.prompt == TASK.messages and pair.chosen[0]["content"] == "b" and pair.rejected[0]["content"] == "d"
    assert best_worst_pairs(_scored([("a", 1.0, True, False), ("b", 1.0, True, False)])) == []
    assert best_worst_pairs(_scored([("a", 1.0, True, False), ("b", 0.9, True, False)]), min_margin=0.5) == []
