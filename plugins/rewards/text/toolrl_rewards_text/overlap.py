"""Overlap with reference text: BLEU-2 (sacrebleu) and keyword recall.

Made for memory tasks, where the answer should restate something the user said
before: the reference is `task.metadata["reference"]` (a string or a list of
strings), the keywords `task.metadata["keywords"]` (the `memory` task suite
writes both).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from toolrl.errors import RewardError

# Words too common to count as keywords when they are derived from the reference.
STOPWORDS = frozenset("""
a an and are as at be been but by can did do does for from had has have he her his how i if in into is it its
me my no not of on or our she so than that the their them then there these they this to was we were what when
where which who why will with would you your
""".split())


def references(meta: Mapping[str, Any], key: str, task: Any, reward: str) -> list[str]:
    """The reference text(s) of one task, or a RewardError naming the task."""
    value = meta.get(key) if isinstance(meta, Mapping) else None
    if isinstance(value, str) and value.strip():
        return [value]
    if isinstance(value, Sequence) and not isinstance(value, str) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise RewardError(
        f"{reward}: the task has no reference text in metadata[{key!r}] (got {value!r})",
        where=f"task {getattr(task, 'id', '?')!r}",
        fix=f'add "metadata": {{"{key}": "the expected answer"}} (a string or a list), or set args.reference_key',
    )


@lru_cache(maxsize=8)
def _bleu(tokenize: str, lowercase: bool) -> Any:
    from sacrebleu.metrics import BLEU

    return BLEU(max_ngram_order=2, effective_order=True, tokenize=tokenize, lowercase=lowercase)


def bleu2(
    trajectories: Sequence[Any],
    *,
    completions: Sequence[str],
    metadata: Sequence[Mapping[str, Any]],
    tasks: Sequence[Any],
    reference_key: str = "reference",
    tokenize: str = "13a",
    lowercase: bool = True,
) -> list[float]:
    """Sentence BLEU-2 of the final answer against the task's reference text, in [0, 1].

    sacrebleu's BLEU with unigrams and bigrams, brevity penalty, and effective
    order (a one-word answer is not zeroed for lacking bigrams); several
    references count as multi-reference BLEU.

    Args:
        trajectories: the batch (toolrl passes it positionally).
        completions: the final assistant message of each trajectory (passed by toolrl).
        metadata: each task's metadata; `metadata[reference_key]` is the reference (passed by toolrl).
        tasks: each trajectory's task, to name it in errors (passed by toolrl).
        reference_key: the metadata key of the reference (a string or a list of strings).
        tokenize: sacrebleu tokenizer: `13a` (default), `zh` for Chinese, `char`, `intl`, `none`.
        lowercase: compare case-insensitively.

    Returns:
        One float per trajectory in [0, 1] (sacrebleu's score / 100).

    Example:
        ```yaml
        rewards:
          - {name: bleu2, weight: 0.5, args: {tokenize: zh}}
        ```
        "the charger works with model X" against "the charger works with model X" scores 1.0.
    """
    try:
        scorer = _bleu(tokenize, bool(lowercase))
    except Exception as exc:  # sacrebleu raises on unknown tokenizers
        raise RewardError(f"bleu2: cannot use tokenize={tokenize!r}: {exc}", where="rewards[].args.tokenize",
                          fix="use 13a, zh, char, intl or none") from exc
    out = []
    for text, meta, task in zip(completions, metadata, tasks):
        refs = references(meta, reference_key, task, "bleu2")
        text = (text or "").strip()
        out.append(scorer.sentence_score(text, refs).score / 100.0 if text else 0.0)
    return out


_WORDS = re.compile(r"\w+", re.U)


def reference_keywords(reference: str) -> list[str]:
    """Content words of a reference (lower-cased, stop words and 1-letter words dropped, in order)."""
    seen: dict[str, None] = {}
    for w in _WORDS.findall(reference.lower()):
        if (len(w) > 1 or not w.isascii()) and w not in STOPWORDS:
            seen.setdefault(w, None)
    return list(seen)


def _contains(text: str, keyword: str) -> bool:
    k = keyword.lower().strip()
    if not k:
        return False
    if k.isascii():
        # whole words; a keyword ending in a digit also matches an ordinal ("June 21" in "June 21st")
        ordinal = "(?:st|nd|rd|th)?" if k[-1].isdigit() else ""
        return re.search(rf"(?<!\w){re.escape(k)}{ordinal}(?!\w)", text) is not None
    return k in text  # CJK: no word boundaries


def keyword_recall(
    trajectories: Sequence[Any],
    *,
    completions: Sequence[str],
    metadata: Sequence[Mapping[str, Any]],
    tasks: Sequence[Any],
    keywords_key: str = "keywords",
    reference_key: str = "reference",
) -> list[float]:
    """The fraction of the task's keywords that the final answer mentions, in [0, 1].

    Keywords are `metadata[keywords_key]` (a list of strings) when the task has
    them; otherwise the content words of `metadata[reference_key]` (stop words
    dropped). Matching is case-insensitive and whole-word for Latin script
    (`"usb-c"` matches "USB-C", `"cat"` does not match "category", `"June 21"`
    matches "June 21st"); substring for other scripts.

    Args:
        trajectories: the batch (toolrl passes it positionally).
        completions: the final assistant message of each trajectory (passed by toolrl).
        metadata: each task's metadata (passed by toolrl).
        tasks: each trajectory's task, to name it in errors (passed by toolrl).
        keywords_key: the metadata key of the keyword list.
        reference_key: the metadata key of the reference text, used when there is no keyword list.

    Returns:
        One float per trajectory: keywords found / keywords.

    Example:
        ```yaml
        rewards:
          - {name: keyword_recall, weight: 0.5}
        ```
        With `metadata: {keywords: ["USB-C", "65W"]}`, "Use a 65W USB-C charger" scores 1.0
        and "Use any charger" 0.0.
    """
    out = []
    for text, meta, task in zip(completions, metadata, tasks):
        keywords = meta.get(keywords_key) if isinstance(meta, Mapping) else None
        if keywords is None:
            keywords = [k for ref in references(meta, reference_key, task, "keyword_recall")
                        for k in reference_keywords(ref)]
        if isinstance(keywords, str) or not isinstance(keywords, Sequence) or not keywords \
                or not all(isinstance(k, str) and k.strip() for k in keywords):
            raise RewardError(
                f"keyword_recall: metadata[{keywords_key!r}] must be a non-empty list of strings, got {keywords!r}",
                where=f"task {getattr(task, 'id', '?')!r}",
                fix=f'write "metadata": {{"{keywords_key}": ["word", "another"]}} or give a reference text',
            )
        lower = (text or "").lower()
        out.append(sum(1 for k in keywords if _contains(lower, k)) / len(keywords))
    return out
