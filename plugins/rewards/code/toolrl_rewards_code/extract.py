"""Getting the program out of a model's answer.

>>> extract_code("Here:\\n```python\\ndef f(x):\\n    return x + 1\\n```\\nDone.")
'def f(x):\\n    return x + 1'
>>> extract_code("no code here") is None
True
"""

from __future__ import annotations

import ast
import re

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(```|\Z)", re.S)
_PYTHON = {"python", "py", "python3", "py3"}


def code_blocks(text: str) -> list[tuple[str, str, bool]]:
    """Every fenced block as (language, body, closed), in order; a final unclosed fence runs to the end."""
    return [(lang.lower(), body.strip("\n"), bool(end)) for lang, body, end in _FENCE.findall(text or "")]


def extract_code(text: str | None, blocks: str = "all", strip_main_guard: bool = True,
                 repair_truncated: bool = True) -> str | None:
    """The Python program in a model's answer, or None if it has none.

    Python-labelled blocks (```` ```python ````, ```` ```py ````) are used when there
    are any, else unlabelled ones; other languages never. With `blocks="all"` the
    blocks are joined in order (a solution followed by a usage example is one
    program, and a later corrected definition replaces an earlier one); with
    `"last"` only the last block counts. With `strip_main_guard`, top-level
    `if __name__ == "__main__":` blocks are removed, because a test harness runs
    the solution as `__main__` and the guard's demo code (often `input()`) would run.
    With `repair_truncated`, an answer cut off inside its last code block (no
    closing fence: the token limit was hit) that no longer parses loses its last
    lines until it does — a correct function followed by a half-written usage
    example still counts; a half-written function still fails its tests.

    Args:
        text: the model's answer.
        blocks: `"all"` or `"last"`.
        strip_main_guard: remove `if __name__ == "__main__":` blocks.
        repair_truncated: drop the unparsable tail of a block cut off by the token limit.

    Returns:
        The source code, or None when the answer holds no Python block.
    """
    if blocks not in ("all", "last"):
        raise ValueError(f"blocks must be 'all' or 'last', got {blocks!r}")
    found = code_blocks(text or "")
    chosen = [(b, closed) for lang, b, closed in found if lang in _PYTHON] or \
        [(b, closed) for lang, b, closed in found if lang == ""]
    chosen = [(b, closed) for b, closed in chosen if b.strip()]
    if not chosen:
        return None
    if blocks == "last":
        chosen = chosen[-1:]
    code = "\n\n".join(b for b, _ in chosen)
    if repair_truncated and not chosen[-1][1]:
        code = without_truncated_tail(code)
    return without_main_guard(code) if strip_main_guard else code


def without_truncated_tail(code: str) -> str:
    """The longest prefix of whole lines of `code` that parses (`code` itself if it parses or nothing does).

    >>> without_truncated_tail("def f():\\n    return 1\\nprint('unfinished")
    'def f():\\n    return 1'
    """
    if _parses(code):
        return code
    lines = code.splitlines()
    for end in range(len(lines) - 1, 0, -1):
        prefix = "\n".join(lines[:end]).rstrip()
        if prefix and _parses(prefix):
            return prefix
    return code


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def without_main_guard(code: str) -> str:
    """`code` without top-level `if __name__ == "__main__":` blocks (unchanged if it does not parse)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    guards = [node for node in tree.body if isinstance(node, ast.If) and _is_main_test(node.test)]
    if not guards:
        return code
    lines = code.splitlines(keepends=True)
    for node in reversed(guards):  # cut by line numbers, so comments and formatting survive
        del lines[node.lineno - 1:node.end_lineno]
    return "".join(lines).rstrip("\n")


def _is_main_test(test: ast.expr) -> bool:
    if not isinstance(test, ast.Compare) or len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    consts = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(consts) == 1
