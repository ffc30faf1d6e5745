"""The README's Python example runs as written and prints what its comment says."""

import re
from pathlib import Path

from toolrl_rewards_math import plugin


def readme_example() -> tuple[str, str]:
    text = (Path(__file__).parents[1] / "README.md").read_text()
    [block] = re.findall(r"^```python\n(.*?)^```[ \t]*$", text, flags=re.S | re.M)
    [printed] = re.findall(r"^print\(.*\)\s+#\s*(.+)$", block, flags=re.M)
    return block, printed.strip()


def test_readme_example_runs(plugin_manager, capsys):
    plugin_manager.register(plugin, name="rewards_math")
    block, expected = readme_example()
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.strip() == expected
