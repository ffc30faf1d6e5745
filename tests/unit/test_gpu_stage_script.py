"""benchmarks/gpu/stage.sh --list: the wheel requirements a GPU sitting stages (the shared vLLM list, TRL,
datasets, multiprocess and Ray; llguidance last), and a clear error without the list."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "stage.sh"


def _list(env_list: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--list"], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "STAGE_WHEEL_LIST": env_list})


def test_list_adds_trl_datasets_and_ray_to_the_shared_vllm_wheels(tmp_path):
    wheels = tmp_path / "wheels.txt"
    wheels.write_text("# a comment\nvllm==0.25.0\nllguidance==1.7.6\n\npydantic==2.14.3\n")
    proc = _list(str(wheels))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["vllm==0.25.0", "pydantic==2.14.3", "trl==1.16.*", "datasets", "multiprocess",
                                   "ray==2.60.*", "llguidance==1.7.6"]


def test_a_missing_wheel_list_is_an_error_that_names_it(tmp_path):
    proc = _list(str(tmp_path / "nope.txt"))
    assert proc.returncode == 1 and "nope.txt not found" in proc.stderr and not proc.stdout


def test_an_unknown_option_is_refused_before_anything_is_downloaded(tmp_path):
    wheels = tmp_path / "wheels.txt"
    wheels.write_text("vllm==0.25.0\n")
    proc = subprocess.run(["bash", str(SCRIPT), "--learn"], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "STAGE_WHEEL_LIST": str(wheels)})
    assert proc.returncode == 2 and "unknown option --learn" in proc.stderr and not proc.stdout
