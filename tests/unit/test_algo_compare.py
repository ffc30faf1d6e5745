"""The pure parts of benchmarks/algo_compare.py: how a budget of episodes is spent, counting, the result store."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    with load_benchmark("algo_compare.py") as mod:
        yield mod


def test_budget_of_48_is_the_demo_shape(bench):
    b = bench.Budget(48, n=4, prompts=3)
    assert (b.tasks, b.rl_steps, b.dapo_steps, b.half_tasks, b.half_rl_steps) == (12, 4, 2, 6, 2)
    # every RL variant's worst case stays within the budget, and SFT-then-GRPO's halves add up to it
    assert b.rl_steps * b.prompts * b.n == 48
    assert b.dapo_steps * bench.DAPO_ROUNDS * b.prompts * b.n == 48
    assert b.half_tasks * b.n + b.half_rl_steps * b.prompts * b.n == 48


@pytest.mark.parametrize("episodes", [0, 12, 36, 50])
def test_budget_that_cannot_be_spent_exactly_is_refused(bench, episodes):
    with pytest.raises(ValueError, match="multiple of 2 x n x prompts = 24"):
        bench.Budget(episodes, n=4, prompts=3)


def test_budget_needs_groups(bench):
    with pytest.raises(ValueError, match="n must be >= 2"):
        bench.Budget(48, n=1, prompts=3)


@pytest.mark.parametrize(("examples", "epochs", "expected"), [(7, 3, (4, 6)), (3, 3, (3, 3)), (1, 2, (1, 2)), (12, 1, (4, 3))])
def test_offline_plan_covers_the_epochs(bench, examples, epochs, expected):
    pps, steps = bench.offline_plan(examples, epochs)
    assert (pps, steps) == expected
    assert pps * steps >= examples * epochs > pps * (steps - 1)


def test_offline_plan_refuses_empty_data(bench):
    with pytest.raises(ValueError, match="no examples"):
        bench.offline_plan(0, 3)


def test_episodes_drawn_counts_dynamic_sampling_rounds(bench):
    assert bench.episodes_drawn([{}, {}, {}, {}], n=4, prompts=3) == 48
    rows = [{"rollout/dynamic_sampling_draws": 2.0}, {"rollout/dynamic_sampling_draws": 1.0}]
    assert bench.episodes_drawn(rows, n=4, prompts=3) == 36


def _unit(acc, seed_steps=4):
    return {"accuracy": acc, "tool_calls": 1.0, "episodes": 48, "steps": seed_steps, "train_s": 300.0, "eval_s": 90.0}


def test_store_resumes_and_table_aggregates_seeds(bench, tmp_path):
    path = tmp_path / "r.json"
    store = bench.Store.load(path)
    store.meta = {"heldout": 32}
    store.put("base", {"accuracy": 5 / 32, "tool_calls": 0.16, "eval_s": 100.0})
    store.put("grpo/seed0", _unit(1.0))
    store.put("grpo/seed1", _unit(0.5))
    store.put("sft/seed1", _unit(0.75, 6))
    again = bench.Store.load(path)
    assert again.done("grpo/seed1") and not again.done("dpo/seed0")
    assert json.loads(path.read_text())["meta"] == {"heldout": 32}
    rows = {r["algo"]: r for r in bench.table_rows(again.units)}
    assert list(rows) == ["base", "sft", "grpo"]  # the ALGOS order, base first
    assert rows["grpo"]["mean"] == pytest.approx(0.75)
    assert rows["grpo"]["sd"] == pytest.approx(0.3535533906)
    assert rows["sft"]["sd"] is None and rows["sft"]["seeds"] == {1: 0.75}
    md = bench.markdown_table(list(rows.values()), 32)
    assert "| grpo | 1.00 (32/32) | 0.50 (16/32) | 0.75 | 0.35 |" in md
    assert "| sft |  | 0.75 (24/32) | 0.75 | - |" in md
    assert "| base | 0.16 (5/32) | 0.16 (5/32) | 0.16 | - |" in md


def test_plan_prints_every_units_commands_and_runs_nothing(bench, tmp_path, capsys):
    out = tmp_path / "plan.json"
    bench.main(["plan", "--seeds", "3", "--results", str(out), "--lock", ""])
    text = capsys.readouterr().out
    assert not out.exists()
    for algo in bench.ALGOS:
        assert f"[unit] {algo}/seed3" in text
    assert "algorithm.dynamic_sampling=true algorithm.max_sampling_draws=2" in text
    assert "trainer.total_steps=2" in text and "trainer.total_steps=4" in text
    assert "model.name_or_path=runs/algo_compare/seed3/sft_grpo_sft/checkpoints/latest" in text
