"""Are two answers the same number or expression?

`normalize_answer` cleans what models write around an answer (currency signs,
thousands separators, units, "x =", a trailing full stop); `numbers_equal`
compares plain numbers exactly (as decimals or fractions); `answers_equal`
adds symbolic equivalence through math-verify (which builds on SymPy):
fractions vs decimals, `2x+1` vs `1+2*x`, `\\frac{\\sqrt{2}}{2}` vs `sqrt(2)/2`.

>>> answers_equal("$1,000.00", "1000")
True
>>> answers_equal("18 dollars", "18")
True
>>> answers_equal("\\\\frac{3}{4}", "0.75")
True
>>> answers_equal("2x + 1", "1 + 2*x")
True
>>> answers_equal("7", "8")
False
"""

from __future__ import annotations

import logging
import re
import threading
from decimal import Decimal, InvalidOperation
from fractions import Fraction

logger = logging.getLogger(__name__)

_CURRENCY = "$€£¥"
# function names and constants that may appear in an expression (not units)
_MATH_WORDS = {"sqrt", "frac", "dfrac", "tfrac", "pi", "sin", "cos", "tan", "log", "ln", "exp", "cdot", "times",
               "left", "right", "infty", "text", "mathrm", "boxed", "div", "le", "ge", "neq", "pm"}
_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d{1,3}(?:[ \u2009\u202f]\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"
_NUMBER_WITH_UNIT = re.compile(
    rf"^\s*[{re.escape(_CURRENCY)}]?\s*({_NUM})\s*(%?)\s*(?:[A-Za-z][A-Za-z .'/-]*)?\s*\.?\s*$"  # "$18 dollars."
)
_PLAIN_NUMBER = re.compile(rf"^(?:{_NUM})$")
_FRACTION = re.compile(r"^([-+]?\d+)\s*/\s*(\d+)$")
_WORD = re.compile(r"(?<!\\)\b[A-Za-z]{3,}\b")


def normalize_answer(text: str) -> str:
    """Strip what surrounds an answer: `\\text{}`, `$` signs, `x =`, units, thousands separators, a final `.`.

    >>> normalize_answer(" $1,234 dollars. ")
    '1234'
    >>> normalize_answer("x = 5")
    '5'
    >>> normalize_answer("12.5 %")
    '12.5%'
    """
    s = text.strip().replace("−", "-").replace("\u00a0", " ")
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\[,!;: ]", "", s)  # LaTeX spacing
    s = s.replace("\\$", "$").replace("\\%", "%")
    if len(s) > 1 and s.startswith("$") and s.endswith("$"):
        s = s.strip("$").strip()  # $...$ math delimiters (a lone leading $ is a currency sign, handled below)
    s = re.sub(r"^[A-Za-z]\s*=\s*", "", s)  # "x = 5"
    m = _NUMBER_WITH_UNIT.match(s)
    if m:
        return re.sub(r"[, \u2009\u202f]", "", m.group(1)).lstrip("+") + m.group(2)
    return s.rstrip(".").strip()


def parse_number(text: str) -> Fraction | None:
    """A plain number (`-3`, `1,000.5`, `3/4`, `12%` = 0.12) as an exact Fraction, else None."""
    s = normalize_answer(text)
    percent = s.endswith("%")
    s = s.rstrip("%").strip()
    m = _FRACTION.match(s)
    try:
        if m:
            value = Fraction(int(m.group(1)), int(m.group(2)))
        elif _PLAIN_NUMBER.match(s):
            value = Fraction(Decimal(s.replace(",", "")))
        else:
            return None
    except (InvalidOperation, ZeroDivisionError, ValueError):
        return None
    return value / 100 if percent else value


def numbers_equal(a: str, b: str) -> bool | None:
    """Exact numeric equality of two plain numbers; None if either is not a plain number.

    `72`, `72.0` and `72.00` are equal; `0.33` and `1/3` are not.
    """
    x, y = parse_number(a), parse_number(b)
    if x is None or y is None:
        return None
    if x == y:
        return True
    # "50%" against "50": the percent sign is decoration in most word problems
    if a.strip().endswith("%") != b.strip().endswith("%"):
        return x * 100 == y or y * 100 == x
    return False


def answers_equal(pred: str | None, gold: str | None, *, timeout: int = 5) -> bool:
    """Whether the predicted answer equals the ground truth, numerically or symbolically.

    Args:
        pred: the extracted answer (see `extract_answer`), or None.
        gold: the ground truth.
        timeout: seconds allowed for each symbolic parse/compare (math-verify's
            signal-based timeout works only in the main thread; elsewhere it is off).

    Returns:
        True if equal; False otherwise, also when either side cannot be parsed.
    """
    if pred is None or gold is None:
        return False
    p, g = normalize_answer(str(pred)), normalize_answer(str(gold))
    if not p or not g:
        return False
    if p == g:
        return True
    exact = numbers_equal(p, g)
    if exact is not None:
        return exact
    return _symbolic_equal(p, g, timeout)


def _symbolic_equal(p: str, g: str, timeout: int) -> bool:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    if _WORD.search(_strip_latex_words(p)):  # prose left in the answer: not an expression we can judge
        return False
    limit = timeout if threading.current_thread() is threading.main_thread() else None
    config = [LatexExtractionConfig(), ExprExtractionConfig()]
    try:
        gp = parse(f"${g}$", extraction_config=config, parsing_timeout=limit)
        pp = parse(f"${p}$", extraction_config=config, parsing_timeout=limit)
        if not gp or not pp:
            return False
        return bool(verify(gp, pp, timeout_seconds=limit))
    except Exception as exc:  # math-verify raises on pathological input; that is "not equal"
        logger.debug("math-verify could not compare %r and %r: %s", p, g, exc)
        return False


def _strip_latex_words(s: str) -> str:
    return " ".join(w for w in re.split(r"(\\?[A-Za-z]+)", s) if w.lower().lstrip("\\") not in _MATH_WORDS)
