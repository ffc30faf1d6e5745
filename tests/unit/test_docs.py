"""Docs are tested against the code: every hook is documented with a runnable example, and has a test."""

import re
from pathlib import Path

import pytest

from toolrl import hookspecs, plugins

ROOT = Path(__file__).resolve().parents[2]
HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("register_"))


def test_hookspecs_and_registry_kinds_agree():
    assert sorted(plugins.KINDS) == HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    text = (ROOT / "docs" / "plugins.md").read_text()
    assert f"## {hook}" in text, f"docs/plugins.md has no section for {hook}"
    section = text.split(f"## {hook}", 1)[1].split("\n## ", 1)[0]
    assert "```python" in section, f"the {hook} section has no runnable example"
    assert f"def {hook}(" in section, f"the {hook} example does not implement the hook"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    tests = [p for p in (ROOT / "tests").rglob("test_*.py") if p.name != "test_docs.py"]
    assert any(hook in p.read_text() or plugins.KINDS[hook] in p.read_text() for p in tests), \
        f"no test mentions {hook} or its registry"


def test_plugin_docs_examples_run(plugin_manager):
    text = (ROOT / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= len(HOOKS)
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"docs/plugins.md block {i + 1}", "exec"), {"__name__": f"docs_block_{i}"})
        except Exception as exc:  # pragma: no cover - the message is the point
            raise AssertionError(f"docs/plugins.md example {i + 1} failed: {exc!r}") from exc
