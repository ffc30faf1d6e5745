"""pass@k, evaluation metrics, evaluators, and the before/after table."""

import io
import json
import math

import pytest

from toolrl.errors import ToolrlError
from toolrl.evaluation.cli import compare_command, compare_table, load_report
from toolrl.evaluation.metrics import eval_metrics, ks_for, pass_at_k, run_evaluators
from toolrl.evaluation.runner import EvalReport
from toolrl.types import RewardResult, Task, Trajectory


def test_pass_at_k_by_hand():
    # n=4, c=1: pass@1 = 1/4; pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)
    assert ks_for(1) == [1] and ks_for(4) == [1, 2, 4] and ks_for(6) == [1, 2, 4, 6]


def _t(tid, i, text="x"):
    return Trajectory(task_id=tid, sample_index=i, prompt_ids=(1,), response_ids=(2, 3), loss_mask=(1, 1),
                      logprobs=(0.0, 0.0), messages=({"role": "user", "content": "q"},
                                                     {"role": "assistant", "content": text}), num_prompt_messages=1)


def test_eval_metrics():
    trajs = [_t("a", i) for i in range(4)] + [_t("b", i) for i in range(4)]
    totals = [1.0, 0.0, 0.0, 0.0] + [1.0, 1.0, None, 0.0]
    results = [RewardResult(v, {"ok": v}) if v is not None else RewardResult(None, {"ok": None}, "none")
               for v in totals]
    m = eval_metrics(trajs, results, n=4)
    assert m["eval/accuracy"] == pytest.approx(3 / 8)
    assert m["eval/pass@1"] == pytest.approx((1 / 4 + 2 / 4) / 2)
    assert m["eval/pass@2"] == pytest.approx((pass_at_k(4, 1, 2) + pass_at_k(4, 2, 2)) / 2)
    assert m["eval/pass@4"] == 1.0 and m["eval/excluded"] == 1.0
    assert m["eval/reward_mean"] == pytest.approx(3 / 7)
    assert m["eval/num_tasks"] == 2 and "eval/distinct_1" in m and "eval/response_length" in m


def test_builtin_and_broken_evaluators(plugin_manager):
    reg = plugin_manager.registry("evaluators")
    trajs = [_t("a", 0, "42"), _t("a", 1, "41")]
    tasks = [Task(id="a", messages=({"role": "user", "content": "q"},), metadata={"answer": "42"})]
    out = run_evaluators([("exact_match", reg.get("exact_match")), ("tool_use", reg.get("tool_use"))],
                         trajs, tasks, [RewardResult(1.0), RewardResult(0.0)])
    assert out["eval/exact_match/accuracy"] == 0.5 and out["eval/tool_use/used_tool"] == 0.0
    with pytest.raises(ToolrlError, match="evaluator 'bad' returned list"):
        run_evaluators([("bad", lambda trajectories, **kw: [1])], trajs, tasks, [RewardResult(1.0)] * 2)


def test_compare_table_and_files(tmp_path):
    from rich.console import Console

    a = EvalReport("base", "m0", "eval.jsonl", 4, 1.0, {"eval/accuracy": 0.25, "eval/pass@4": 0.5})
    b = EvalReport("trained", "m1", "eval.jsonl", 4, 1.0, {"eval/accuracy": 0.75, "eval/pass@4": 1.0})
    for r, name in ((a, "a.json"), (b, "b.json")):
        (tmp_path / name).write_text(json.dumps(r.to_json()))
    buf = io.StringIO()
    Console(file=buf, width=120).print(compare_table([load_report(tmp_path / "a.json"), load_report(tmp_path / "b.json")]))
    out = buf.getvalue()
    assert "base" in out and "trained" in out and "+0.5" in out and "accuracy" in out
    assert [r.label for r in compare_command([str(tmp_path / "a.json"), str(tmp_path / "b.json")])] == ["base", "trained"]
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ToolrlError, match="not a toolrl eval results file"):
        load_report(tmp_path / "bad.json")
