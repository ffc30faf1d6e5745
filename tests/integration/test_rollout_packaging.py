"""A real wheel of the root `toolrl` distribution holds every module of the package.

A package folder without `__init__.py` is left out by setuptools' `packages.find`, which an
editable install hides (toolrl.trainer was missing this way); this builds the wheel the way
a user's `pip install .` does and compares its contents with the source tree.
"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_every_package_folder_has_an_init():
    missing = [str(d.relative_to(ROOT)) for d in (ROOT / "toolrl").rglob("*")
               if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py")) and not (d / "__init__.py").exists()]
    assert not missing, f"package folders without __init__.py (left out of wheels): {missing}"


def test_wheel_contains_every_toolrl_module(tmp_path):
    # build from a copy, so no build/ or egg-info folders land in the shared source tree
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "toolrl", src / "toolrl", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", ".", "-w", str(out)],
                       cwd=src, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    [wheel] = out.glob("toolrl-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        inside = {n for n in zf.namelist() if n.startswith("toolrl/") and n.endswith(".py")}
    expected = {p.relative_to(src).as_posix() for p in (src / "toolrl").rglob("*.py")}
    assert expected, "no modules found in the source tree"
    missing = sorted(expected - inside)
    assert not missing, f"{len(missing)} module(s) missing from the wheel, e.g. {missing[:5]}"
    assert "toolrl/trainer/__init__.py" in inside and "toolrl/rollout/hf_engine.py" in inside
