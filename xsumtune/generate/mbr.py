"""Minimum Bayes risk selection: of an article's candidate summaries, the one that agrees most with the others.

Agreement is the mean of ROUGE-1, ROUGE-2 and ROUGE-L F1 between two candidates, with the scorer's own
tokenizer and Porter stemmer, so the pick is the candidate that the others, taken as pseudo-references,
score highest. No reference summary is read: the choice is part of decoding, as beam search is.

No torch here."""
from __future__ import annotations

from collections import Counter
from functools import cache

from rouge_score import tokenizers


@cache
def _tokenizer() -> tokenizers.DefaultTokenizer:
    return tokenizers.DefaultTokenizer(use_stemmer=True)


class _Parsed:
    __slots__ = ("tokens", "unigrams", "bigrams")

    def __init__(self, text: str):
        self.tokens = _tokenizer().tokenize(text)
        self.unigrams = Counter(self.tokens)
        self.bigrams = Counter(zip(self.tokens, self.tokens[1:]))


def _f1(overlap: int, a: int, b: int) -> float:
    # precision overlap / a, recall overlap / b: F1 = 2 * overlap / (a + b), the same either way round
    return 2.0 * overlap / (a + b) if overlap else 0.0


def _lcs(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        previous = 0  # row[j - 1] of the row before
        for j, y in enumerate(b, 1):
            current = row[j]
            row[j] = previous + 1 if x == y else max(row[j], row[j - 1])
            previous = current
    return row[-1]


def _agreement(x: _Parsed, y: _Parsed) -> float:
    rouge1 = _f1(sum((x.unigrams & y.unigrams).values()), len(x.tokens), len(y.tokens))
    rouge2 = _f1(sum((x.bigrams & y.bigrams).values()), max(len(x.tokens) - 1, 0), max(len(y.tokens) - 1, 0))
    rouge_l = _f1(_lcs(x.tokens, y.tokens), len(x.tokens), len(y.tokens))
    return (rouge1 + rouge2 + rouge_l) / 3


def agreement(x: str, y: str) -> float:
    """Mean ROUGE-1/2/L F1 of two texts, in [0, 1]; symmetric; 0 when either has no tokens."""
    return _agreement(_Parsed(x), _Parsed(y))


def select(candidates: list[str]) -> int:
    """Index of the candidate with the highest total agreement with the others (the first on a tie)."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    parsed = [_Parsed(text) for text in candidates]
    totals = [0.0] * len(parsed)
    for i in range(len(parsed)):
        for j in range(i + 1, len(parsed)):
            value = _agreement(parsed[i], parsed[j])
            totals[i] += value
            totals[j] += value
    return max(range(len(totals)), key=lambda i: (totals[i], -i))
