"""benchmarks/gpu/rollout_vs_llm.py's repetition order (the rest needs vLLM and a GPU): a balanced Latin square,
so no method always runs first or always right after the slowest."""

from __future__ import annotations

import sys
from collections import Counter

import pytest


@pytest.fixture()
def bench(load_benchmark, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts its folder on the path
    with load_benchmark("gpu/rollout_vs_llm.py") as mod:
        yield mod


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_every_method_runs_in_every_position_and_after_every_other_equally_often(bench, n):
    names = [f"m{i}" for i in range(n)]
    rows = n if n % 2 == 0 else 2 * n
    orders = [bench.rep_order(names, rep) for rep in range(rows)]
    assert all(sorted(o) == names for o in orders)  # each repetition runs every method once
    for pos in range(n):
        assert Counter(o[pos] for o in orders) == {m: rows // n for m in names}
    follows = Counter((o[i - 1], o[i]) for o in orders for i in range(1, n))
    assert set(follows.values()) == {rows // n} and len(follows) == n * (n - 1)  # every ordered pair, equally
    assert bench.rep_order(names, rows) == orders[0]  # then the square repeats


def test_the_four_methods_order_no_longer_puts_agenerate_after_the_slowest_every_time(bench):
    names = ["backend.agenerate", "backend.generate", "LLM.generate (backend's params)", "LLM.generate (logprobs=0)"]
    orders = [bench.rep_order(names, rep) for rep in range(4)]
    before = [o[o.index(names[0]) - 1] for o in orders if o[0] != names[0]]  # within a repetition
    assert sorted(before) == sorted(names[1:])  # each other method right before it once; once it runs first
    assert [o[0] for o in orders].count(names[0]) == 1
    assert bench.rep_order(names, 0) == names[:2] + [names[3], names[2]]
