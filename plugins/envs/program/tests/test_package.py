"""toolrl-env-program as a distribution: listed by `toolrl plugins`, and buildable as a wheel with its entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def test_toolrl_plugins_lists_it():
    env = {k: v for k, v in os.environ.items() if k != "TOOLRL_NO_ENTRYPOINTS"}
    r = subprocess.run([sys.executable, "-m", "toolrl.cli", "plugins", "--json"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    row = {row["name"]: row for row in json.loads(r.stdout)}["env_program"]
    assert row["error"] is None and row["distribution"] == "toolrl-env-program" and row["version"] == "0.1.0"
    assert {k: sorted(v) for k, v in row["registered"].items()} == {"environments": ["program"],
                                                                    "rewards": ["result_match"]}


def test_builds_a_wheel_with_its_entry_point(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(FOLDER, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path / "wheels"), str(src)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PIP_NO_INDEX": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    assert wheel.name.startswith("toolrl_env_program-0.1.0-")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
        metadata = zf.read(f"{info}/METADATA").decode()
    assert "[toolrl]\nenv_program = toolrl_env_program.plugin" in entry_points
    shipped = {Path(n).name for n in names if n.startswith("toolrl_env_program/")}
    assert {p.name for p in (FOLDER / "toolrl_env_program").iterdir() if p.suffix in (".py", ".typed")} <= shipped
    assert "Requires-Dist: toolrl-serving>=0.1" in metadata and "Requires-Dist: openai>=1.40" in metadata
