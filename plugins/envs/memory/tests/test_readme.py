"""The README's Python example runs as written (real embeddings) and finds the relevant note."""

import ast
import re
from pathlib import Path

from toolrl_env_memory import plugin


def test_readme_example_runs(plugin_manager, embedder, capsys):
    plugin_manager.register(plugin, name="env_memory")
    text = (Path(__file__).parents[1] / "README.md").read_text()
    [block] = re.findall(r"^```python\n(.*?)^```[ \t]*$", text, flags=re.S | re.M)
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    lines = capsys.readouterr().out.strip().splitlines()
    request, notes_header, recalled, relevant = lines[0], lines[1], lines[-2], lines[-1]
    assert request.endswith("?") and notes_header.endswith("most relevant first:")
    assert set(ast.literal_eval(relevant)) <= set(ast.literal_eval(recalled))
