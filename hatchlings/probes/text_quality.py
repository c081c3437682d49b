"""Scores of generated text that need no reference and no model: word formation, distinct-n, repetition.

Shared by every architecture's quality probe (`hatchlings probe hrm quality`, HRAN's), so that all report the
same numbers computed the same way. All work on words, not tokens: a char-, byte- and BPE-level model's text
is then counted alike.

Definitions (a *sample* is one generated continuation; a mode or model has several):

- words: maximal runs of letters (any script) with inner apostrophes ("know't"), case folded; digits and
  punctuation are not words. A sample that ends inside a word (the length budget cut it) loses that last word,
  which is unfinished rather than wrong.
- word formation: share of the generated word *occurrences* that occur in the training text's vocabulary (its
  set of words, found the same way). A model that spells real words scores near 1, letter soup near 0.
- distinct-n (Li et al., 2016): distinct word n-grams / all word n-grams, pooled over the samples (n-grams never
  cross from one sample into the next). 1 means no n-gram is used twice anywhere.
- repetition rate (rep-3, as in Welleck et al., 2019, over words): within each sample, the share of word 3-grams
  that repeat a 3-gram seen earlier in the same sample, i.e. (3-grams - distinct 3-grams) / 3-grams, pooled as
  sums over the samples. 0 means no sample repeats itself; a loop ("the king the king the king") approaches 1.

A ratio whose denominator is 0 (no words, or samples shorter than n words) is None: not measurable, not 0.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
REPETITION_N = 3


def words(text: str, drop_partial: bool = True) -> list[str]:
    """The case-folded words of `text`; with `drop_partial`, a word the text ends inside of is left out."""
    found = list(WORD.finditer(text))
    if drop_partial and found and found[-1].end() == len(text):
        found.pop()
    return [m.group().lower() for m in found]


def vocabulary(text: str) -> set[str]:
    """The set of words of a (training) text; the text is complete, so its last word counts."""
    return set(words(text, drop_partial=False))


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The n-grams of one sequence, in order (none when it is shorter than n)."""
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def distinct_n(samples: Iterable[Sequence[str]], n: int) -> float | None:
    """Distinct n-grams / all n-grams over all samples (the n-grams of each sample counted on its own)."""
    grams = [gram for sample in samples for gram in ngrams(sample, n)]
    return _ratio(len(set(grams)), len(grams))


def repetition_rate(samples: Iterable[Sequence[str]], n: int = REPETITION_N) -> float | None:
    """Share of n-grams that repeat an earlier n-gram of the same sample, pooled: sum(all - distinct) / sum(all)."""
    repeated = total = 0
    for sample in samples:
        grams = ngrams(sample, n)
        repeated += len(grams) - len(set(grams))
        total += len(grams)
    return _ratio(repeated, total)


def word_formation(samples: Iterable[Sequence[str]], known: set[str]) -> float | None:
    """Share of the samples' word occurrences found in `known` (the training text's vocabulary)."""
    occurrences = [word for sample in samples for word in sample]
    return _ratio(sum(word in known for word in occurrences), len(occurrences))


def score(texts: Iterable[str], known: set[str]) -> dict:
    """Every score of a set of generated texts: samples, words, word_formation, distinct_1, distinct_2,
    repetition (rep-3), each ratio None when not measurable."""
    samples = [words(text) for text in texts]
    return {"samples": len(samples), "words": sum(len(s) for s in samples),
            "word_formation": word_formation(samples, known), "distinct_1": distinct_n(samples, 1),
            "distinct_2": distinct_n(samples, 2), "repetition": repetition_rate(samples)}


__all__ = ["distinct_n", "ngrams", "repetition_rate", "score", "vocabulary", "word_formation", "words"]
