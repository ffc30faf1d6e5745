"""Real pip installs of reward plugins into a fresh virtual environment.

`pip install ./plugins/rewards/math` must be all it takes for `math_equiv` to
show up in `toolrl plugins --json` and work from a config. The main .venv
cannot show that, because `make` already installed every plugin there in
editable mode. So this module makes a new venv:

1. `python -m venv --without-pip` (pip runs from the main venv with `--python`);
2. a `.pth` file puts a *view* of the main venv's site-packages on its path:
   symlinks to every third-party package, without any toolrl distribution and
   without editable-install hooks, so nothing toolrl-related leaks in (the test
   checks that no `toolrl` entry point is visible before installing);
3. `pip install --no-deps` of toolrl itself from a copy of the repository's sources;
4. per test: `toolrl plugins --json` without its plugin (absent), then
   `pip install --no-deps <plugin>` (a real wheel build and install), then
   `toolrl plugins --json` and a config using the reward, through
   `toolrl.rewards.compute_rewards_sync`, in that venv's own Python with
   entry points on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
_SKIP = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")


def _excluded_distributions(site: Path) -> tuple[set[str], set[str]]:
    """dist-info folders and top-level names of every toolrl distribution in `site`."""
    infos, tops = set(), set()
    for info in site.glob("*.dist-info"):
        name = info.name.split("-")[0].lower().replace("_", "-")
        eps = info / "entry_points.txt"
        is_plugin = eps.exists() and re.search(r"^\[toolrl\]", eps.read_text(), flags=re.M)
        if name.startswith("toolrl") or is_plugin:
            infos.add(info.name)
            record = info / "RECORD"
            if record.exists():
                for line in record.read_text().splitlines():
                    top = line.split(",", 1)[0].split("/", 1)[0]
                    if top and not top.endswith(".dist-info") and top != "..":
                        tops.add(top)
    return infos, tops


def make_base_view(dest: Path) -> Path:
    """Symlinks to the main venv's third-party packages, without toolrl distributions or editable hooks."""
    site = Path(sysconfig.get_paths()["purelib"])
    infos, tops = _excluded_distributions(site)
    dest.mkdir(parents=True)
    for entry in site.iterdir():
        name = entry.name
        if name in infos or name in tops or name.startswith("__editable__") or name.endswith(".pth"):
            continue
        (dest / name).symlink_to(entry)
    return dest


def run(cmd: list[str], *, env: dict[str, str] | None = None, timeout: int = 180) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


class FreshVenv:
    """A new venv with toolrl (no plugins) and third-party packages borrowed from the main venv."""

    def __init__(self, root: Path):
        self.root = root
        run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")])
        self.python = root / "venv" / "bin" / "python"
        purelib = run([str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
        self.site = Path(purelib)
        (self.site / "_toolrl_test_base.pth").write_text(str(make_base_view(root / "base")) + "\n")
        self.env = {k: v for k, v in os.environ.items() if k not in ("TOOLRL_NO_ENTRYPOINTS", "PYTHONPATH")}
        self.env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        self.env["PIP_NO_INDEX"] = "1"  # everything is local: a resolver that tries the network is a bug
        src = root / "toolrl-src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / name, src / name)
        shutil.copytree(ROOT / "toolrl", src / "toolrl", ignore=_SKIP)
        self.pip_install(src)

    def pip_install(self, source: Path) -> None:
        copy = self.root / "pkgs" / source.name
        if not copy.exists():  # build from a copy, so the repository gets no build/ or egg-info folders
            shutil.copytree(source, copy, ignore=_SKIP)
        run([sys.executable, "-m", "pip", "--python", str(self.python), "install", "-q", "--no-deps",
             "--no-build-isolation", str(copy)], env=self.env)

    def python_json(self, code: str) -> object:
        out = run([str(self.python), "-c", code], env=self.env)
        return json.loads(out.strip().splitlines()[-1])

    def plugins(self) -> dict[str, dict]:
        out = run([str(self.python), "-m", "toolrl.cli", "plugins", "--json"], env=self.env)
        return {row["name"]: row for row in json.loads(out)}

    def reward_names(self) -> list[str]:
        return self.python_json(
            "import json; from toolrl import plugins; print(json.dumps(plugins.names('rewards')))")  # type: ignore


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """One fresh venv for this module; each test checks that its plugin is absent before installing it."""
    v = FreshVenv(tmp_path_factory.mktemp("fresh"))
    visible = v.python_json(
        "import json, importlib.metadata as md; "
        "print(json.dumps(sorted(f'{e.dist.name}:{e.name}' for e in md.entry_points(group='toolrl'))))")
    assert visible == [], f"the fresh venv already sees toolrl plugins: {visible}"
    return v


COMPOSE = textwrap.dedent("""
    import json, sys
    import toolrl_rewards_math
    from toolrl.config import load_config
    from toolrl.rewards import compute_rewards_sync
    from toolrl.types import Task, Trajectory

    config = load_config(sys.argv[1])
    task = Task(id="q1", messages=({"role": "user", "content": "What is 1/2 + 1/4?"},), metadata={"answer": "3/4"})

    def traj(i, text):
        return Trajectory(task_id="q1", sample_index=i, prompt_ids=(1,), response_ids=(2,), loss_mask=(1,),
                          logprobs=(0.0,), num_prompt_messages=1,
                          messages=(*task.messages, {"role": "assistant", "content": text}))

    results, metrics = compute_rewards_sync(
        [traj(0, "1/2 + 1/4 = \\\\boxed{0.75}"), traj(1, "<answer>1/6</answer>")], [task], config.rewards)
    print(json.dumps({"totals": [r.total for r in results], "metrics": metrics,
                      "module": toolrl_rewards_math.__file__}))
""")


def test_pip_install_math_plugin_registers_math_equiv_and_it_works_from_a_config(venv, tmp_path):
    assert "rewards_math" not in venv.plugins()
    assert "math_equiv" not in venv.reward_names()

    venv.pip_install(ROOT / "plugins" / "rewards" / "math")

    row = venv.plugins()["rewards_math"]
    assert row["distribution"] == "toolrl-rewards-math" and row["version"] == "0.1.0"
    assert row["registered"] == {"rewards": ["gsm8k_exact", "math_equiv"]} and row["error"] is None
    config = tmp_path / "run.yaml"
    config.write_text("rewards:\n  - {name: math_equiv, weight: 1.0}\n")
    script = tmp_path / "compose.py"
    script.write_text(COMPOSE)
    out = json.loads(run([str(venv.python), str(script), str(config)], env=venv.env).strip().splitlines()[-1])
    assert out["totals"] == [1.0, 0.0]
    assert out["metrics"]["reward/math_equiv"] == 0.5
    assert Path(out["module"]).is_relative_to(venv.site), "the plugin must come from the fresh venv's install"



def test_plugin_guide_example_installs_registers_and_its_tests_pass(venv, tmp_path):
    """The files shown in docs/plugin-guide.md, extracted from the guide itself, make a working plugin."""
    text = (ROOT / "docs" / "plugin-guide.md").read_text()
    files = re.findall(r"<!-- file: examples/plugin_tutorial/(\S+) -->\n```\w*\n(.*?)^```[ \t]*$", text,
                       flags=re.S | re.M)
    assert {name for name, _ in files} >= {"pyproject.toml", "toolrl_tool_budget/__init__.py",
                                           "tests/test_tool_budget.py"}
    dist = tmp_path / "toolrl-tool-budget"
    for name, body in files:
        (dist / name).parent.mkdir(parents=True, exist_ok=True)
        (dist / name).write_text(body)
    assert "tool_budget" not in venv.plugins()

    venv.pip_install(dist)

    row = venv.plugins()["tool_budget"]
    assert row["distribution"] == "toolrl-tool-budget" and row["version"] == "0.1.0"
    assert row["registered"] == {"rewards": ["tool_budget"]} and row["error"] is None
    out = run([str(venv.python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(dist),
               str(dist / "tests")], env=venv.env)
    assert "3 passed" in out
