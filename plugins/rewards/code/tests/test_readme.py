"""The README's Python example runs as written (real sandbox) and prints what its comment says."""

import re
from pathlib import Path

import pytest

from toolrl import runtime
from toolrl_rewards_code import plugin

pytestmark = pytest.mark.integration


def readme_example() -> tuple[str, str]:
    text = (Path(__file__).parents[1] / "README.md").read_text()
    [block] = re.findall(r"^```python\n(.*?)^```[ \t]*$", text, flags=re.S | re.M)
    [printed] = re.findall(r"^print\(.*\)\s+#\s*(.+)$", block, flags=re.M)
    return block, printed.strip()


def test_readme_example_runs(plugin_manager, capsys):
    plugin_manager.register(plugin, name="rewards_code")
    block, expected = readme_example()
    try:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    finally:  # the sync wrapper ran the reward on the process runtime's loop, with the run's pool: close both
        runtime.close()
    assert capsys.readouterr().out.strip() == expected
