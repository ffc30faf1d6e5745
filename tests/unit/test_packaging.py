"""Every distribution in the repository declares its licence the current way (no set-up warnings)."""

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECTS = sorted(p for p in ROOT.glob("**/pyproject.toml")
                    if not {".venv", "build", "node_modules"} & set(p.relative_to(ROOT).parts))


@pytest.mark.parametrize("path", PYPROJECTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_license_is_an_spdx_string(path):
    data = tomllib.loads(path.read_text())
    lic = data["project"].get("license")
    if lic is None:
        return  # test fixtures and the tutorial declare none; setuptools is silent then
    # a table ({text = ...} / {file = ...}) is deprecated by setuptools and prints a page of warnings per build
    assert isinstance(lic, str) and lic == "Apache-2.0", f"{path}: license = {lic!r}; use license = \"Apache-2.0\""
    requires = " ".join(data["build-system"]["requires"])
    assert "setuptools>=77" in requires, f"{path}: SPDX licence strings need setuptools>=77 (got {requires!r})"


def test_the_main_distributions_all_declare_the_licence():
    declared = {p.parent.relative_to(ROOT).as_posix() for p in PYPROJECTS
                if "license" in tomllib.loads(p.read_text())["project"]}
    assert {".", "serving", "sandbox"} <= declared
