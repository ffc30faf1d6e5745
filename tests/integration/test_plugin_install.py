"""Real pip installs of plugin distributions, seen by `toolrl plugins --json` in a fresh process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
pytestmark = pytest.mark.integration


def pip_install(target: Path, *packages: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(target), *map(str, packages)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def toolrl_plugins(site: Path) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TOOLRL_NO_ENTRYPOINTS"}
    env["PYTHONPATH"] = str(site)
    r = subprocess.run([sys.executable, "-m", "toolrl.cli", "plugins", "--json"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    pip_install(target, FIXTURES / "toolrl-fixture-plugin", FIXTURES / "toolrl-broken-plugin")
    return target


def test_installed_plugin_is_listed_with_distribution_version_and_names(site):
    rows = {r["name"]: r for r in toolrl_plugins(site)}
    fx = rows["fixture"]
    assert fx["distribution"] == "toolrl-fixture-plugin"
    assert fx["version"] == "0.3.1"
    assert sorted(fx["hooks"]) == ["register_rewards", "register_task_suites"]
    assert fx["registered"] == {"rewards": ["fixture_half"], "task_suites": ["fixture-count"]}
    assert fx["error"] is None and fx["builtin"] is False


def test_broken_plugin_is_reported_and_does_not_take_others_down(site):
    rows = {r["name"]: r for r in toolrl_plugins(site)}
    assert rows["broken"]["distribution"] == "toolrl-broken-plugin"
    assert rows["broken"]["error"] == "RuntimeError: this plugin is broken on purpose"
    assert rows["fixture"]["error"] is None


def test_installed_plugin_is_usable_from_python(site):
    env = {k: v for k, v in os.environ.items() if k != "TOOLRL_NO_ENTRYPOINTS"}
    env["PYTHONPATH"] = str(site)
    code = ("from toolrl import plugins; fn = plugins.get('rewards', 'fixture_half'); "
            "print(fn([1, 2, 3])); print(plugins.registry('rewards').entry('fixture_half').distribution)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[0.5,", "0.5,", "0.5]", "toolrl-fixture-plugin"]


def test_without_the_install_the_plugin_is_absent(tmp_path):
    assert "fixture" not in {r["name"] for r in toolrl_plugins(tmp_path)}
