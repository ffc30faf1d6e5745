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


def test_the_commands_say_what_they_wrote_and_what_they_left_out(tmp_path, monkeypatch, capsys):
    """`toolrl data sft` / `dpo` report on stderr (as `toolrl data make` does), not as a log warning. The model's
    sampling is replaced by fixed scored samples: this test is about the files and the report."""
    import json

    from toolrl.trainer import offline_data

    other = Task(id="u", messages=({"role": "user", "content": "q"},))
    scored = _scored([("a", 1.0, True, False), ("b", 0.0, False, False)]) + [
        Scored(other, [(_traj(0, "x"), RewardResult(0.0), False), (_traj(1, "y"), RewardResult(0.0), False)])]
    monkeypatch.setattr(offline_data, "sample_and_score", lambda cfg, model, tasks, n: scored)
    sft = offline_data.sft_command(None, model="m", tasks="t.jsonl", n=2, out=str(tmp_path / "sft.jsonl"))
    err = capsys.readouterr().err
    assert f"wrote 1 conversations (of 2 tasks, 2 samples each) to {sft}" in err
    assert "1 task(s) had no correct sample and are left out" in err
    assert [json.loads(line)["id"] for line in sft.read_text().splitlines()] == ["t"]
    dpo = offline_data.dpo_command(None, model="m", tasks="t.jsonl", n=2, out=str(tmp_path / "dpo.jsonl"))
    err = capsys.readouterr().err
    assert f"wrote 1 pairs (of 2 tasks, 2 samples each) to {dpo}" in err
    assert "1 task(s) had no reward gap of 1e-06 or more and are left out" in err
    assert len(dpo.read_text().splitlines()) == 1
