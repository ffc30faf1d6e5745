"""The three environment plugins as distributions: visible in `toolrl plugins`, and buildable as wheels.

`make` installs every plugins/envs/* (editable) into .venv; `toolrl plugins`
must then list each with what it registered. Building each one as a wheel
(a real pip build, no network) checks that its pyproject declares the entry
point and ships its package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

EXPECTED = {
    "env_code": ("toolrl-env-code", "toolrl_env_code",
                 {"environments": ["python"], "task_suites": ["arith-tool", "code", "gsm"]}),
    "env_memory": ("toolrl-env-memory", "toolrl_env_memory",
                   {"environments": ["memory"], "task_suites": ["memory"], "rewards": ["memory_recall"]}),
    "env_bfcl": ("toolrl-env-bfcl", "toolrl_env_bfcl",
                 {"environments": ["bfcl"], "task_suites": ["bfcl"], "rewards": ["bfcl", "bfcl_ast", "bfcl_state"]}),
}


def test_toolrl_plugins_lists_the_environment_plugins():
    env = {k: v for k, v in os.environ.items() if k != "TOOLRL_NO_ENTRYPOINTS"}
    r = subprocess.run([sys.executable, "-m", "toolrl.cli", "plugins", "--json"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    for name, (dist, _, registered) in EXPECTED.items():
        assert name in rows, f"{dist} is not installed in this venv (make installs plugins/envs/*)"
        row = rows[name]
        assert row["error"] is None and row["distribution"] == dist and row["version"] == "0.1.0"
        assert {k: sorted(v) for k, v in row["registered"].items()} == registered


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_plugin_builds_a_wheel_with_its_entry_point(name, tmp_path):
    dist, package, _ = EXPECTED[name]
    folder = ROOT / "plugins" / "envs" / name.removeprefix("env_")
    src = tmp_path / "src"
    shutil.copytree(folder, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path / "wheels"), str(src)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PIP_NO_INDEX": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    assert wheel.name.startswith(dist.replace("-", "_") + "-0.1.0-")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
        metadata = zf.read(f"{info}/METADATA").decode()
    assert f"[toolrl]\n{name} = {package}.plugin" in entry_points
    shipped = {Path(n).name for n in names if n.startswith(f"{package}/")}
    on_disk = {p.name for p in (folder / package).iterdir() if p.suffix in (".py", ".typed")}
    assert on_disk <= shipped
    assert "Requires-Dist: toolrl>=0.1" in metadata and "## Run it" in metadata  # the README is the description
