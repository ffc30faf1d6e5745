"""Docs are tested against the code: every hook is documented with a runnable example, and has a test."""

import ast
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


def _test_sources() -> dict[str, str]:
    """Every test module of the repository (and the fixture plugin packages the tests install)."""
    paths = [p for p in ROOT.glob("tests/**/*.py") if p.name != "test_docs.py"]
    for sub in ("plugins", "serving", "sandbox"):
        paths += [p for p in (ROOT / sub).glob("**/tests/**/*.py")]
    return {str(p.relative_to(ROOT)): p.read_text() for p in paths}


def _is_hookimpl(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Name) and target.id == "hookimpl") or \
        (isinstance(target, ast.Attribute) and target.attr == "hookimpl")


def _registers(tree: ast.AST, path: str) -> bool:
    """The module registers a plugin: a `….register(plugin, …)` call, or it is an entry-point package."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "register" \
                and node.args:
            return True
    for parent in (ROOT / path).parents:
        pyproject = parent / "pyproject.toml"
        if parent == ROOT:
            return False
        if pyproject.exists():
            return "[project.entry-points.toolrl]" in pyproject.read_text()
    return False


def hook_exercised_in(hook: str, sources: dict[str, str]) -> list[str]:
    """Test files that implement `hook` with @hookimpl (a function of that name) and register the plugin.

    A mention of the hook's or the registry's name in a comment, a string or an
    import does not count: only an implementation that a test registers does.
    """
    found = []
    for path, text in sources.items():
        tree = ast.parse(text, filename=path)
        implements = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == hook
                         and any(_is_hookimpl(d) for d in n.decorator_list) for n in ast.walk(tree))
        if implements and _registers(tree, path):
            found.append(path)
    return found


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    assert hook_exercised_in(hook, _test_sources()), \
        f"no test implements {hook} with @hookimpl and registers the plugin (see tests/unit/test_plugin_hooks.py)"


def test_hook_test_check_can_fail():
    """The check above rejects mentions, unregistered implementations and undecorated functions."""
    hook = "register_rewards"
    mention = f'"""{hook} is tested elsewhere."""\n# {hook}, rewards\nx = "{hook}"\n'
    unregistered = f"from toolrl import hookimpl\n\nclass P:\n    @hookimpl\n    def {hook}(self, register):\n" \
                   f"        register('a', print)\n"
    undecorated = f"class P:\n    def {hook}(self, register):\n        pass\n\npm.register(P(), name='p')\n"
    real = unregistered + "\n\ndef test_it(plugin_manager):\n    plugin_manager.register(P(), name='p')\n"
    assert hook_exercised_in(hook, {"tests/x/test_a.py": mention, "tests/x/test_b.py": unregistered,
                                    "tests/x/test_c.py": undecorated}) == []
    assert hook_exercised_in(hook, {"tests/x/test_d.py": real}) == ["tests/x/test_d.py"]
    assert hook_exercised_in("register_nothing_yet", _test_sources()) == []


def test_plugin_docs_examples_run(plugin_manager):
    text = (ROOT / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= len(HOOKS)
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"docs/plugins.md block {i + 1}", "exec"), {"__name__": f"docs_block_{i}"})
        except Exception as exc:  # pragma: no cover - the message is the point
            raise AssertionError(f"docs/plugins.md example {i + 1} failed: {exc!r}") from exc


def _repo_files() -> list[str]:
    skip = {".venv", ".git", "runs", "build", "node_modules", "__pycache__"}
    out = []
    for p in ROOT.rglob("*"):
        rel = p.relative_to(ROOT)
        if rel.parts and rel.parts[0] in skip or "__pycache__" in rel.parts or not p.is_file():
            continue
        out.append(rel.as_posix())
    return out


def test_docs_cite_only_files_that_exist():
    """Markdown links resolve, and a file cited in backticks (`x.md`, `pkg/y.py`) is in the repository."""
    files = _repo_files()
    pages = sorted(ROOT.glob("docs/*.md")) + [ROOT / "README.md"] + sorted(ROOT.glob("examples/*/README.md"))
    missing = []
    for page in pages:
        text = page.read_text()
        for m in re.finditer(r"\]\(([^)\s]+)\)", text):
            target = m.group(1).split("#")[0]
            if target and not re.match(r"[a-z]+:", target) and not (page.parent / target).exists():
                missing.append(f"{page.relative_to(ROOT)}: link {target}")
        for m in re.finditer(r"`([A-Za-z0-9_./-]+\.(?:md|py|toml|sh|yaml|yml))`", text):
            name = m.group(1)
            if name.startswith(("~", "/")) or ("/" not in name and name.endswith(".py")):
                continue  # a bare module name (`json.py`) is usually a name, not a citation
            if not any(f == name or f.endswith("/" + name) for f in files):
                missing.append(f"{page.relative_to(ROOT)}: `{name}`")
    assert not missing, "docs cite files that are not in the repository:\n" + "\n".join(missing)


def test_docs_pages_named_in_the_code_exist():
    cited = {(p.relative_to(ROOT).as_posix(), m) for p in ROOT.glob("toolrl/**/*.py")
             for m in re.findall(r"docs/[A-Za-z0-9_./-]+\.md", p.read_text())}
    missing = sorted(f"{src} -> {page}" for src, page in cited if not (ROOT / page).exists())
    assert not missing, missing


def test_yaml_config_blocks_in_the_docs_are_valid_configs(tmp_path):
    """Every ```yaml block of the docs that is a mapping loads as a toolrl config (defaults for the rest):
    a user pastes these, so a key renamed or a value that breaks a cross-field check fails here."""
    import yaml

    from toolrl.config import load_config

    pages = sorted(ROOT.glob("docs/*.md")) + [ROOT / "README.md"] + sorted(ROOT.glob("examples/*/README.md"))
    checked, bad = 0, []
    for page in pages:
        text = page.read_text()
        for m in re.finditer(r"```ya?ml\n(.*?)```", text, re.S):
            data = yaml.safe_load(m.group(1))
            if not isinstance(data, dict):
                continue
            where = f"{page.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}"
            path = tmp_path / f"block{checked}.yaml"
            path.write_text(m.group(1))
            checked += 1
            try:
                load_config(str(path), [])
            except Exception as exc:  # the config's own error says what is wrong
                bad.append(f"{where}: {exc}")
    assert checked >= 10, f"only {checked} yaml blocks found: the pattern no longer matches the docs"
    assert not bad, "yaml blocks in the docs that are not valid configs:\n" + "\n".join(bad)
