"""benchmarks/async_path_overhead.py runs end to end on a tiny shape: both paths, the right lengths, a result file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_both_paths_run_the_same_engine_steps_and_the_file_has_both_rows(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "async_path_overhead.py"), "--requests", "8",
                           "--tokens", "5", "--reps", "2", "--step-ms", "0.5", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert set(res["rows"]) == {"agenerate", "generate"}
    for row in res["rows"].values():
        assert len(row["seconds"]) == 2 and row["engine_steps"] == [5, 5]  # all 8 requests in the first step
    assert res["rows"]["generate"]["median_vs_generate"] == 1.0
    assert "stand-in step 0.5 ms" in proc.stdout
