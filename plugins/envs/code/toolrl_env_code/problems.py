"""Procedural function-writing problems for the `code` suite (never HumanEval).

Each family draws its parameters from a seeded `random.Random`, states the
problem, and computes the expected outputs of its test inputs with its own
reference solution. A family returns a `Problem`; `code_suite.py` turns it
into a task whose `metadata.tests` are `assert` lines.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One problem: what to write, a reference solution, and inputs to test it on.

    Attributes:
        family: the generator's name.
        entry_point: the function's name.
        signature: e.g. "digit_root(n: int) -> int".
        statement: what the function must do (one paragraph).
        reference: the reference solution, called with each input tuple.
        examples: input tuples shown in the prompt (with their outputs).
        inputs: input tuples the tests check (disjoint from the examples).
    """

    family: str
    entry_point: str
    signature: str
    statement: str
    reference: Callable[..., Any]
    examples: tuple[tuple[Any, ...], ...]
    inputs: tuple[tuple[Any, ...], ...]


def _ints(rng: random.Random, k: int, lo: int, hi: int) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(k)]


def _word(rng: random.Random, lo: int = 3, hi: int = 8) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(lo, hi)))


def _split(rng: random.Random, cases: list[tuple[Any, ...]], n_examples: int = 2) -> tuple[tuple, tuple]:
    unique = list(dict.fromkeys(repr(c) for c in cases))
    by_repr = {repr(c): c for c in cases}
    chosen = [by_repr[r] for r in unique]
    return tuple(chosen[:n_examples]), tuple(chosen[n_examples:])


# -- families ---------------------------------------------------------------------------------------------------


def sum_multiples(rng: random.Random) -> Problem:
    a, b = rng.sample(range(2, 10), 2)

    def ref(n: int) -> int:
        return sum(i for i in range(1, n) if i % a == 0 or i % b == 0)

    cases = [(n,) for n in [10, 1, a, b, a * b + 1, *_ints(rng, 5, 2, 500)]]
    ex, tests = _split(rng, cases)
    return Problem("sum_multiples", f"sum_multiples_{a}_{b}", f"sum_multiples_{a}_{b}(n: int) -> int",
                   f"Return the sum of all positive integers below n that are divisible by {a} or by {b} "
                   f"(0 when there are none).", ref, ex, tests)


def count_letters(rng: random.Random) -> Problem:
    letters = "".join(sorted(rng.sample(string.ascii_lowercase, rng.randint(2, 5))))

    def ref(s: str) -> int:
        return sum(1 for c in s.lower() if c in letters)

    words = [" ".join(_word(rng) for _ in range(rng.randint(1, 4))) for _ in range(6)]
    cases = [(w.title() if i % 2 else w,) for i, w in enumerate(words)] + [("",), (letters.upper(),)]
    ex, tests = _split(rng, cases)
    return Problem("count_letters", "count_letters", "count_letters(s: str) -> int",
                   f"Return how many characters of s are one of the letters {', '.join(repr(c) for c in letters)}, "
                   f"ignoring case.", ref, ex, tests)


def caesar(rng: random.Random) -> Problem:
    k = rng.randint(1, 25)

    def ref(s: str) -> str:
        out = []
        for c in s:
            if c.islower():
                out.append(chr((ord(c) - 97 + k) % 26 + 97))
            elif c.isupper():
                out.append(chr((ord(c) - 65 + k) % 26 + 65))
            else:
                out.append(c)
        return "".join(out)

    cases = [(" ".join(_word(rng) for _ in range(rng.randint(1, 3))).capitalize() + rng.choice(["", "!", "?"]),)
             for _ in range(6)] + [("xyz XYZ",), ("",)]
    ex, tests = _split(rng, cases)
    return Problem("caesar", f"shift_{k}", f"shift_{k}(s: str) -> str",
                   f"Shift every letter of s forward by {k} places in the alphabet, wrapping from z to a and "
                   f"keeping upper and lower case; leave other characters unchanged.", ref, ex, tests)


def run_length(rng: random.Random) -> Problem:
    count_first = rng.random() < 0.5

    def ref(s: str) -> str:
        out, i = [], 0
        while i < len(s):
            j = i
            while j < len(s) and s[j] == s[i]:
                j += 1
            out.append(f"{j - i}{s[i]}" if count_first else f"{s[i]}{j - i}")
            i = j
        return "".join(out)

    def runs() -> str:
        return "".join(rng.choice("abcde") * rng.randint(1, 5) for _ in range(rng.randint(1, 5)))

    cases = [(runs(),) for _ in range(6)] + [("",), ("z",)]
    ex, tests = _split(rng, cases)
    form = "count then character, e.g. 'aaab' -> '3a1b'" if count_first else \
        "character then count, e.g. 'aaab' -> 'a3b1'"
    return Problem("run_length", "rle", "rle(s: str) -> str",
                   f"Run-length encode s: write each run of equal characters as {form}. The empty string "
                   f"encodes to ''.", ref, ex, tests)


def kth_largest(rng: random.Random) -> Problem:
    k = rng.randint(2, 4)

    def ref(nums: list) -> Any:
        distinct = sorted(set(nums), reverse=True)
        return distinct[k - 1] if len(distinct) >= k else None

    cases = [(_ints(rng, rng.randint(k, 9), -50, 50),) for _ in range(6)] + [([7] * k,), ([],)]
    ex, tests = _split(rng, cases)
    return Problem("kth_largest", f"largest_{k}", f"largest_{k}(nums: list[int]) -> int | None",
                   f"Return the {k}{'nd' if k == 2 else 'rd' if k == 3 else 'th'} largest distinct value in nums, "
                   f"or None if nums has fewer than {k} distinct values.", ref, ex, tests)


def window_sums(rng: random.Random) -> Problem:
    w = rng.randint(2, 4)

    def ref(nums: list) -> list:
        return [sum(nums[i:i + w]) for i in range(len(nums) - w + 1)]

    cases = [(_ints(rng, rng.randint(w, 9), -20, 20),) for _ in range(6)] + [([1] * (w - 1),)]
    ex, tests = _split(rng, cases)
    return Problem("window_sums", f"window_sums_{w}", f"window_sums_{w}(nums: list[int]) -> list[int]",
                   f"Return the sums of every run of {w} consecutive elements of nums, in order "
                   f"(an empty list when nums has fewer than {w} elements).", ref, ex, tests)


def rotate(rng: random.Random) -> Problem:
    k = rng.randint(1, 5)
    right = rng.random() < 0.5

    def ref(nums: list) -> list:
        if not nums:
            return []
        s = k % len(nums)
        return nums[-s:] + nums[:-s] if right and s else nums[s:] + nums[:s]

    cases = [(_ints(rng, rng.randint(1, 8), 0, 9),) for _ in range(6)] + [([],)]
    ex, tests = _split(rng, cases)
    side = "right" if right else "left"
    return Problem("rotate", f"rotate_{side}_{k}", f"rotate_{side}_{k}(nums: list[int]) -> list[int]",
                   f"Return a new list with nums rotated {k} place(s) to the {side} (the rotation wraps around; an "
                   f"empty list stays empty).", ref, ex, tests)


def digit_power_sum(rng: random.Random) -> Problem:
    p = rng.randint(1, 4)

    def ref(n: int) -> int:
        return sum(int(d) ** p for d in str(abs(n)))

    cases = [(n,) for n in [0, -47, *_ints(rng, 6, 1, 10 ** 7)]]
    ex, tests = _split(rng, cases)
    return Problem("digit_power_sum", f"digit_power_sum_{p}", f"digit_power_sum_{p}(n: int) -> int",
                   f"Return the sum of the decimal digits of n, each raised to the power {p} (ignore the sign "
                   f"of n).", ref, ex, tests)


def collatz(rng: random.Random) -> Problem:
    measure = rng.choice(["steps", "peak"])

    def ref(n: int) -> int:
        steps, peak = 0, n
        while n != 1:
            n = n // 2 if n % 2 == 0 else 3 * n + 1
            peak = max(peak, n)
            steps += 1
        return steps if measure == "steps" else peak

    cases = [(n,) for n in [1, 6, 27, *_ints(rng, 5, 2, 3000)]]
    ex, tests = _split(rng, cases)
    what = "the number of steps it takes to reach 1" if measure == "steps" else \
        "the largest value reached (including n itself)"
    return Problem("collatz", f"collatz_{measure}", f"collatz_{measure}(n: int) -> int",
                   f"Starting from a positive integer n, repeatedly replace n by n // 2 if it is even and by "
                   f"3 * n + 1 if it is odd, until it is 1. Return {what}.", ref, ex, tests)


def fib_like(rng: random.Random) -> Problem:
    a, b = rng.randint(0, 5), rng.randint(1, 5)
    m = rng.choice([97, 1000, 10007, 1_000_000_007])

    def ref(n: int) -> int:
        x, y = a, b
        for _ in range(n):
            x, y = y, x + y
        return x % m

    cases = [(n,) for n in [0, 1, 2, *_ints(rng, 5, 3, 300)]]
    ex, tests = _split(rng, cases)
    return Problem("fib_like", "seq_mod", "seq_mod(n: int) -> int",
                   f"A sequence starts s(0) = {a}, s(1) = {b}, and s(i) = s(i-1) + s(i-2) after that. "
                   f"Return s(n) modulo {m}.", ref, ex, tests)


def palindrome(rng: random.Random) -> Problem:
    def ref(s: str) -> bool:
        t = [c.lower() for c in s if c.isalnum()]
        return t == t[::-1]

    def pal() -> str:
        half = _word(rng, 2, 5)
        mid = rng.choice(["", rng.choice(string.ascii_lowercase)])
        s = half + mid + half[::-1]
        return "".join(c.upper() if rng.random() < 0.3 else c for c in s) + rng.choice(["", "!", " ."])

    cases = [(pal(),) for _ in range(3)] + [(_word(rng) + "xq",) for _ in range(3)] + [("",), ("A man, a plan",)]
    ex, tests = _split(rng, cases)
    return Problem("palindrome", "is_loose_palindrome", "is_loose_palindrome(s: str) -> bool",
                   "Return True if s reads the same backwards as forwards when only letters and digits are kept "
                   "and case is ignored, else False.", ref, ex, tests)


def threshold_filter(rng: random.Random) -> Problem:
    t = rng.randint(-10, 30)
    strict = rng.random() < 0.5
    descending = rng.random() < 0.5

    def ref(nums: list) -> list:
        kept = [x for x in nums if (x > t if strict else x >= t)]
        return sorted(kept, reverse=descending)

    cases = [(_ints(rng, rng.randint(0, 9), t - 15, t + 15) + [t],) for _ in range(7)]
    ex, tests = _split(rng, cases)
    cmp = "greater than" if strict else "greater than or equal to"
    order = "descending" if descending else "ascending"
    return Problem("threshold_filter", "keep_sorted", "keep_sorted(nums: list[int]) -> list[int]",
                   f"Return the elements of nums that are {cmp} {t}, sorted in {order} order "
                   f"(duplicates kept).", ref, ex, tests)


def count_primes_between(rng: random.Random) -> Problem:
    def ref(lo: int, hi: int) -> int:
        return sum(1 for x in range(max(lo, 2), hi + 1) if all(x % d for d in range(2, math.isqrt(x) + 1)))

    cases = [(1, 10), (10, 1), (2, 2)] + [tuple(sorted(_ints(rng, 2, 0, 2000))) for _ in range(5)]
    ex, tests = _split(rng, cases)
    return Problem("count_primes_between", "count_primes", "count_primes(lo: int, hi: int) -> int",
                   "Return how many prime numbers p satisfy lo <= p <= hi (0 if lo > hi).", ref, ex, tests)


def gcd_lcm(rng: random.Random) -> Problem:
    use_lcm = rng.random() < 0.5

    def ref(nums: list) -> int:
        out = nums[0]
        for x in nums[1:]:
            out = out * x // math.gcd(out, x) if use_lcm else math.gcd(out, x)
        return out

    cases = [(_ints(rng, rng.randint(1, 4), 1, 60) if use_lcm else [rng.randint(1, 20) * f for f in
                                                                      _ints(rng, rng.randint(1, 4), 1, 30)],)
             for _ in range(7)]
    ex, tests = _split(rng, cases)
    what = "least common multiple" if use_lcm else "greatest common divisor"
    name = "lcm_all" if use_lcm else "gcd_all"
    return Problem("gcd_lcm", name, f"{name}(nums: list[int]) -> int",
                   f"Return the {what} of all the numbers in nums (a non-empty list of positive integers).",
                   ref, ex, tests)


def title_case(rng: random.Random) -> Problem:
    small = sorted(rng.sample(["a", "an", "the", "of", "and", "or", "in", "on", "to", "for"], 4))

    def ref(s: str) -> str:
        words = s.split()
        return " ".join(w.capitalize() if i == 0 or w.lower() not in small else w.lower() for i, w in enumerate(words))

    def sentence() -> str:
        return " ".join(rng.choice(small + [_word(rng) for _ in range(3)]) for _ in range(rng.randint(1, 7)))

    cases = [(sentence(),) for _ in range(6)] + [(small[0] + " " + _word(rng).upper(),), ("",)]
    ex, tests = _split(rng, cases)
    return Problem("title_case", "headline", "headline(s: str) -> str",
                   f"Split s on whitespace and join the words with single spaces, capitalising each word "
                   f"(first letter upper case, the rest lower case), except that the words {small} are written "
                   f"all in lower case unless they are the first word.", ref, ex, tests)


def brackets(rng: random.Random) -> Problem:
    pairs = rng.sample([("(", ")"), ("[", "]"), ("{", "}"), ("<", ">")], rng.randint(2, 3))
    opens = {o: c for o, c in pairs}
    closes = set(opens.values())

    def ref(s: str) -> bool:
        stack: list[str] = []
        for ch in s:
            if ch in opens:
                stack.append(opens[ch])
            elif ch in closes:
                if not stack or stack.pop() != ch:
                    return False
        return not stack

    def balanced(depth: int = 0) -> str:
        out = ""
        for _ in range(rng.randint(1, 3)):
            o, c = rng.choice(pairs)
            out += o + (balanced(depth + 1) if depth < 2 and rng.random() < 0.5 else rng.choice(["", "x"])) + c
        return out

    cases = [(balanced(),) for _ in range(4)]
    cases += [(s[:-1],) for s in (balanced() for _ in range(2))] + [(pairs[0][1] + pairs[0][0],), ("",)]
    ex, tests = _split(rng, cases)
    shown = " ".join(o + c for o, c in pairs)
    return Problem("brackets", "balanced", "balanced(s: str) -> bool",
                   f"Return True if the brackets {shown} in s are balanced and properly nested, else False. "
                   f"Other characters are ignored.", ref, ex, tests)


def dedupe(rng: random.Random) -> Problem:
    ignore_case = rng.random() < 0.5

    def ref(words: list) -> list:
        seen, out = set(), []
        for w in words:
            key = w.lower() if ignore_case else w
            if key not in seen:
                seen.add(key)
                out.append(w)
        return out

    def words() -> list:
        pool = [_word(rng, 2, 4) for _ in range(3)]
        return [rng.choice(pool).upper() if rng.random() < 0.3 else rng.choice(pool) for _ in range(rng.randint(0, 7))]

    cases = [(words(),) for _ in range(7)]
    ex, tests = _split(rng, cases)
    how = "ignoring case (keep the first spelling seen)" if ignore_case else "case-sensitively"
    return Problem("dedupe", "dedupe", "dedupe(words: list[str]) -> list[str]",
                   f"Return words without repeats, {how}, keeping the order of first appearance.", ref, ex, tests)


def to_base(rng: random.Random) -> Problem:
    b = rng.randint(2, 9)

    def ref(n: int) -> str:
        if n == 0:
            return "0"
        sign, n = ("-", -n) if n < 0 else ("", n)
        digits = []
        while n:
            n, r = divmod(n, b)
            digits.append(str(r))
        return sign + "".join(reversed(digits))

    cases = [(n,) for n in [0, b, -b - 1, *_ints(rng, 5, 1, 100000)]]
    ex, tests = _split(rng, cases)
    return Problem("to_base", f"to_base_{b}", f"to_base_{b}(n: int) -> str",
                   f"Return n written in base {b} as a string of digits, with a leading '-' for negative n and "
                   f"'0' for zero.", ref, ex, tests)


def diagonal(rng: random.Random) -> Problem:
    anti = rng.random() < 0.5

    def ref(m: list) -> int:
        n = len(m)
        return sum(m[i][n - 1 - i] if anti else m[i][i] for i in range(n))

    cases = [([_ints(rng, k, -9, 9) for _ in range(k)],) for k in [1, 2, 3, 3, 4, 4, 5]]
    ex, tests = _split(rng, cases)
    which = "anti-diagonal (top-right to bottom-left)" if anti else "main diagonal (top-left to bottom-right)"
    return Problem("diagonal", "diagonal_sum", "diagonal_sum(m: list[list[int]]) -> int",
                   f"m is a square matrix given as a list of rows. Return the sum of its {which}.", ref, ex, tests)


def interleave(rng: random.Random) -> Problem:
    def ref(a: list, b: list) -> list:
        out = []
        for i in range(max(len(a), len(b))):
            if i < len(a):
                out.append(a[i])
            if i < len(b):
                out.append(b[i])
        return out

    cases = [(_ints(rng, rng.randint(0, 5), 0, 9), _ints(rng, rng.randint(0, 5), 10, 99)) for _ in range(7)]
    ex, tests = _split(rng, cases)
    return Problem("interleave", "interleave", "interleave(a: list[int], b: list[int]) -> list[int]",
                   "Return a[0], b[0], a[1], b[1], ... ; when one list runs out, append the rest of the other.",
                   ref, ex, tests)


def word_stats(rng: random.Random) -> Problem:
    min_len = rng.randint(3, 6)

    def ref(s: str) -> dict:
        out: dict[str, int] = {}
        for w in s.lower().split():
            if len(w) >= min_len:
                out[w] = out.get(w, 0) + 1
        return out

    def sentence() -> str:
        pool = [_word(rng, 2, 8) for _ in range(4)]
        return " ".join(rng.choice(pool).capitalize() if rng.random() < 0.3 else rng.choice(pool)
                        for _ in range(rng.randint(0, 8)))

    cases = [(sentence(),) for _ in range(7)]
    ex, tests = _split(rng, cases)
    return Problem("word_stats", "long_word_counts", "long_word_counts(s: str) -> dict[str, int]",
                   f"Lower-case s, split it on whitespace, and return a dict mapping each word of at least "
                   f"{min_len} characters to how many times it occurs.", ref, ex, tests)


FAMILIES: dict[str, Callable[[random.Random], Problem]] = {
    f.__name__: f for f in (
        sum_multiples, count_letters, caesar, run_length, kth_largest, window_sums, rotate, digit_power_sum,
        collatz, fib_like, palindrome, threshold_filter, count_primes_between, gcd_lcm, title_case, brackets,
        dedupe, to_base, diagonal, interleave, word_stats,
    )
}
"""Every problem family, by name (the `families=` argument of the `code` suite)."""
