"""The README's Python example runs as written and prints what its comments say."""

import ast
import re
from pathlib import Path

from toolrl_env_bfcl import plugin


def test_readme_example_runs(plugin_manager, capsys):
    plugin_manager.register(plugin, name="env_bfcl")
    text = (Path(__file__).parents[1] / "README.md").read_text()
    [block] = re.findall(r"^```python\n(.*?)^```[ \t]*$", text, flags=re.S | re.M)
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    request, ground_truth, ls_result, score = capsys.readouterr().out.strip().splitlines()
    assert request and all(isinstance(c, str) for c in ast.literal_eval(ground_truth))
    assert "current_directory_content" in ls_result
    assert score == "[0.0]"
