"""scripts/test_workers.sh: `make test` runs two pytest-xdist workers only where 2 CPUs and 20 GB are there,
counting a container's cgroup limits. The machine's sources are replaced by files (NPROC, MEMINFO, CGROUP)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TWO = "-n 2 --dist loadfile"


def workers(tmp_path: Path, nproc: int, mem_gb: float, cgroup: dict[str, str] | None = None) -> str:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       {int(mem_gb * 1024 * 1024)} kB\nMemFree:         1000 kB\n")
    root = tmp_path / "cgroup"
    for rel, text in (cgroup or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text + "\n")
    env = {**os.environ, "NPROC": str(nproc), "MEMINFO": str(meminfo), "CGROUP": str(root)}
    r = subprocess.run(["bash", str(ROOT / "scripts" / "test_workers.sh")], env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize(("nproc", "mem_gb", "expected"), [
    (2, 23.4, TWO),      # the CI machine
    (16, 128, TWO),
    (1, 64, ""),         # one core: one process
    (4, 16, ""),         # too little memory for two workers
])
def test_machine_without_limits(tmp_path, nproc, mem_gb, expected):
    assert workers(tmp_path, nproc, mem_gb) == expected


@pytest.mark.parametrize(("cgroup", "expected"), [
    ({"memory.max": "max", "cpu.max": "max 100000"}, TWO),                 # v2, no limits
    ({"memory.max": str(8 * 1024**3)}, ""),                                 # v2: an 8 GiB container
    ({"memory.max": str(24 * 1024**3), "cpu.max": "100000 100000"}, ""),    # v2: one CPU's quota
    ({"memory.max": str(24 * 1024**3), "cpu.max": "200000 100000"}, TWO),
    ({"memory/memory.limit_in_bytes": str(12 * 1024**3)}, ""),             # v1 memory limit
    ({"memory/memory.limit_in_bytes": "9223372036854771712",               # v1, no limits (this machine)
      "cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, TWO),
    ({"cpu/cpu.cfs_quota_us": "50000", "cpu/cpu.cfs_period_us": "100000"}, ""),  # v1: half a CPU
])
def test_container_limits_count(tmp_path, cgroup, expected):
    assert workers(tmp_path, 8, 64, cgroup) == expected
