"""benchmarks/host_overhead_bench.py runs, writes its result file, and its baselines compute what the code does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[2]


def test_the_baselines_match_the_code(load_benchmark):
    from toolrl.algorithms.advantages import AdvantageInput, grpo

    with load_benchmark("host_overhead_bench.py") as bench:
        scores = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, 1.0, 1.0, 3.0])
        batch = AdvantageInput(scores, torch.ones(8, 3), ["a"] * 4 + ["b"] * 4, torch.ones(8, dtype=torch.bool))
        cfg = SimpleNamespace(norm_adv_by_std=True)
        assert torch.allclose(bench.grpo_loop(batch, cfg), grpo(batch, cfg).advantages, atol=1e-6)


def test_the_script_writes_its_table_and_file(tmp_path):
    out = tmp_path / "h.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "host_overhead_bench.py"), "--reps", "1",
                          "--number", "2", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rows = json.loads(out.read_text())["seconds_per_call"]
    assert set(rows) == {"grpo, 256 samples in 32 groups", "delta_of, one 256-token request"}
    assert all(s > 0 for ways in rows.values() for s in ways.values())
    assert "vs before" in run.stdout
