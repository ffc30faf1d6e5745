"""docs/rewards.md documents every argument of the model-based rewards (reward_model, llm_judge and
bertscore_f1), with a config snippet and a Python example each, and those examples run as written."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from toolrl_rewards_model import plugin
from toolrl_rewards_text.model_based import bertscore_f1

DOC = Path(__file__).resolve().parents[4] / "docs" / "rewards.md"
KEYWORDS = {"trajectories", "tasks", "metadata", "env_states", "completions"}


def rewards():
    found = {}
    plugin.register_rewards(register=found.__setitem__)
    found["bertscore_f1"] = bertscore_f1
    return found


def section(name: str) -> str:
    text = DOC.read_text()
    assert f"\n### {name}\n" in text, f"docs/rewards.md has no section for {name}"
    return text.split(f"\n### {name}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


@pytest.mark.parametrize("name", sorted(rewards()))
def test_every_argument_is_in_the_table_and_the_docstring(name):
    fn = rewards()[name]
    text = section(name)
    doc = inspect.getdoc(fn)
    for part in ("Args:", "Returns:", "Example:"):
        assert part in doc, f"{name} docstring lacks {part}"
    for arg in inspect.signature(fn).parameters:
        if arg in KEYWORDS:
            continue
        assert re.search(rf"^\| `{arg}` \|", text, flags=re.M), f"docs/rewards.md: {name} lacks `{arg}`"
        assert f"    {arg}:" in doc, f"{name} docstring lacks {arg}"
    assert re.search(rf"^```yaml\n(.*\n)*?.*name: {name}\b", text, flags=re.M), f"{name}: no config snippet"


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(rewards()))
def test_python_example_runs(name):
    blocks = re.findall(r"^```python\n(.*?)^```[ \t]*$", section(name), flags=re.S | re.M)
    assert len(blocks) == 1, f"{name}: expected one Python example"
    exec(compile(blocks[0], f"docs/rewards.md ({name})", "exec"), {"__name__": f"doc_{name}"})


def test_listed_by_toolrl_plugins():
    """The installed distributions register the three model-based rewards (entry points on)."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TOOLRL_NO_ENTRYPOINTS"}
    out = subprocess.run([sys.executable, "-m", "toolrl.cli", "plugins", "--all", "--json"], env=env,
                         capture_output=True, text=True, check=True, timeout=120).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["rewards_model"]["distribution"] == "toolrl-rewards-model" and rows["rewards_model"]["error"] is None
    assert rows["rewards_model"]["registered"]["rewards"] == ["reward_model", "llm_judge"]
    assert "bertscore_f1" in rows["rewards_text"]["registered"]["rewards"]
