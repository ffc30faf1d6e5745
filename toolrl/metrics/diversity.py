"""Diversity of generated text: distinct-n and n-gram entropy.

Texts are split on whitespace (model-independent, so two checkpoints with the
same tokenizer or not compare fairly). distinct-n is the number of unique
n-grams over the number of n-grams in all texts together (Li et al. 2016);
n-gram entropy is the Shannon entropy, in bits, of the n-gram frequency
distribution (Zhang et al. 2018). A policy that collapses onto one answer
drives both toward 0.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence


def ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def _counts(texts: Iterable[str], n: int) -> Counter[tuple[str, ...]]:
    c: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        c.update(ngrams(text.split(), n))
    return c


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Unique n-grams / all n-grams across `texts` (0.0 when there are none)."""
    c = _counts(texts, n)
    total = sum(c.values())
    return len(c) / total if total else 0.0


def ngram_entropy(texts: Iterable[str], n: int) -> float:
    """Entropy in bits of the n-gram distribution across `texts` (0.0 when there are none)."""
    c = _counts(texts, n)
    total = sum(c.values())
    if not total:
        return 0.0
    return -sum(k / total * math.log2(k / total) for k in c.values())


def diversity_metrics(texts: Sequence[str], prefix: str = "rollout/") -> dict[str, float]:
    """`distinct_1`, `distinct_2` and `entropy_2gram` of `texts`, under `prefix`."""
    texts = list(texts)
    return {
        f"{prefix}distinct_1": distinct_n(texts, 1),
        f"{prefix}distinct_2": distinct_n(texts, 2),
        f"{prefix}entropy_2gram": ngram_entropy(texts, 2),
    }
