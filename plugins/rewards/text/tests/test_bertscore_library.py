"""bertscore_f1 is the bert-score library's F1 (on the local MiniLM folder, offline), with toolrl's plumbing:
several references (best counts), empty answers, baseline rescaling, layer choice."""

from __future__ import annotations

import pytest

from toolrl.errors import RewardError
from toolrl_rewards_text import model_based
from toolrl_rewards_text.model_based import bertscore_f1

REF = "Your package arrives on Monday."
ANSWERS = ["Your parcel will be delivered Monday.", "I like turtles.", "Monday.", "Your package arrives on Monday."]


def run(build, answers, reference, **args):
    task = build.task("b", {"reference": reference})
    trajs = [build.trajectory("b", [], a) for a in answers]
    return bertscore_f1(trajs, completions=answers, metadata=[task.metadata] * len(answers), tasks=[task] * len(answers),
                        **args)


def test_equals_the_library_functional_api(build, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a local folder: nothing may come from a hub
    monkeypatch.setattr(model_based, "_MODELS", {})  # the layer-3 scorer made here does not outlive the test
    import bert_score

    from toolrl.models import resolve_embedding_model

    path = str(resolve_embedding_model("all-minilm-l6-v2"))
    _, _, f1 = bert_score.score(ANSWERS, [REF] * len(ANSWERS), model_type=path, num_layers=6)
    assert run(build, ANSWERS, REF) == pytest.approx(f1.tolist(), abs=1e-6)
    _, _, f1_l3 = bert_score.score(ANSWERS, [REF] * len(ANSWERS), model_type=path, num_layers=3)
    assert run(build, ANSWERS, REF, num_layers=3) == pytest.approx(f1_l3.tolist(), abs=1e-6)


def test_several_references_take_the_best_and_empty_answers_score_zero(build):
    single = run(build, ANSWERS, REF)
    other = run(build, ANSWERS, "Bananas are yellow.")
    both = run(build, ANSWERS, ["Bananas are yellow.", REF])
    assert both == pytest.approx([max(a, b) for a, b in zip(single, other)], abs=1e-6)
    assert run(build, ["", "   ", ANSWERS[0]], REF) == [0.0, 0.0, pytest.approx(single[0], abs=1e-6)]


def test_bad_layer_and_batch_size_say_how_to_fix(build):
    with pytest.raises(RewardError, match="num_layers must be between 1 and 6") as info:
        run(build, ANSWERS[:1], REF, num_layers=9)
    assert info.value.where.endswith("num_layers") and "last layer" in info.value.fix
    with pytest.raises(RewardError, match="batch_size must be a positive integer"):
        run(build, ANSWERS[:1], REF, batch_size=0)
