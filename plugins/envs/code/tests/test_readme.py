"""The README's Python example runs as written (real sandbox) and prints the product."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_readme_example_runs(docker_ready, capsys):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    [block] = re.findall(r"^```python\n(.*?)^```[ \t]*$", text, flags=re.S | re.M)
    [expected] = re.findall(r"^\s*print\(result\.text\)\s+#\s*(.+)$", block, flags=re.M)
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.strip() == expected.strip() == str(4821 * 7309)
