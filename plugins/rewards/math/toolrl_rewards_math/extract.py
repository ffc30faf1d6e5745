"""Final-answer extraction from a model's text.

Four ways to find the answer, tried in the order the caller gives:

* `"hash"`: the text after the last `####` (GSM8K's convention), up to the end of its line;
* `"boxed"`: the content of the last `\\boxed{...}` (or `\\fbox{...}`), braces matched;
* `"answer_tag"`: the content of the last `<answer>...</answer>`;
* `"last_number"`: the last number in the text (`1,234.5`, `-3`, `3/4` and `.5` count).

>>> extract_answer("so 3 + 4 = 7\\n#### 7")
'7'
>>> extract_answer("The answer is $\\\\boxed{\\\\frac{1}{2}}$.")
'\\\\frac{1}{2}'
>>> extract_answer("<answer>42 apples</answer>", methods=("answer_tag",))
'42 apples'
>>> extract_answer("no digits here") is None
True
"""

from __future__ import annotations

import re
from collections.abc import Sequence

METHODS: tuple[str, ...] = ("answer_tag", "boxed", "hash", "last_number")
"""Every extraction method, in the default order of `math_equiv`."""

# Long outputs: the answer is at the end, and regexes over megabytes are slow.
CLIP_CHARS = 4000

_NUMBER = r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+−]?\.\d+"
_NUMBER_RE = re.compile(rf"(?<![\w.])(?:{_NUMBER})(?:\s*/\s*\d+)?")
_HASH_RE = re.compile(r"####[ \t]*([^\n]*)")
_HASH_NUMBER_RE = re.compile(rf"####[ \t]*[$]?[ \t]*({_NUMBER})")
_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


def extract_answer(text: str | None, methods: Sequence[str] = METHODS) -> str | None:
    """The model's final answer as a string, or None if no method finds one.

    Args:
        text: the model's output (e.g. the final assistant message).
        methods: extraction methods to try, in order (see `METHODS`).

    Returns:
        The answer text, stripped (not yet normalised), or None.
    """
    if not text:
        return None
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown extraction method(s) {unknown}; use any of {list(METHODS)}")
    text = text[-CLIP_CHARS:]
    for method in methods:
        found = _EXTRACTORS[method](text)
        if found is not None and found.strip():
            return found.strip()
    return None


def extract_hash(text: str) -> str | None:
    """The text after the last `####` on its line (GSM8K)."""
    matches = _HASH_RE.findall(text)
    return matches[-1].strip() if matches else None


def extract_hash_number(text: str) -> str | None:
    """The number written right after the last `####` that is followed by one (GSM8K, strict).

    >>> extract_hash_number("#### $1,000.")
    '1,000'
    >>> extract_hash_number("#### the answer is 7") is None
    True
    """
    matches = _HASH_NUMBER_RE.findall(text[-CLIP_CHARS:])
    return matches[-1] if matches else None


def extract_boxed(text: str) -> str | None:
    r"""The content of the last `\boxed{...}`, with nested braces matched."""
    starts = [m.end() for m in _BOXED_RE.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i]
    return None


def extract_answer_tag(text: str) -> str | None:
    """The content of the last `<answer>...</answer>` tag."""
    matches = _TAG_RE.findall(text)
    return matches[-1] if matches else None


def extract_last_number(text: str) -> str | None:
    """The last number in the text, as written (`1,234.5`, `-3`, `3/4`)."""
    matches = _NUMBER_RE.findall(text)
    return matches[-1].strip() if matches else None


_EXTRACTORS = {
    "hash": extract_hash,
    "boxed": extract_boxed,
    "answer_tag": extract_answer_tag,
    "last_number": extract_last_number,
}
