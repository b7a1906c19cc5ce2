"""What a set of summaries is like, whatever its scores: length, abstractiveness, compression, repetition."""
from __future__ import annotations

import re
import statistics

import numpy as np

from xsumtune.score.rouge import split_sentences

WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lowercased words without punctuation: the unit of lengths, n-gram novelty and copying."""
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def sentence_count(text: str) -> int:
    """Sentences as ROUGE-Lsum splits them; text without a word (say a lone ".") has none."""
    return len(split_sentences(text).split("\n")) if words(text) else 0


def novel_ngram_share(summary: str, document: str, n: int) -> float | None:
    """Share of the summary's n-grams that the article doesn't contain (abstractiveness); None if too short."""
    summary_ngrams = ngrams(words(summary), n)
    if not summary_ngrams:
        return None
    in_document = set(ngrams(words(document), n))
    return sum(gram not in in_document for gram in summary_ngrams) / len(summary_ngrams)


def repeated_ngram_share(summary: str, n: int = 3) -> float | None:
    """Share of the summary's n-grams that repeat an earlier one of its own (degenerate loops); None if too short."""
    grams = ngrams(words(summary), n)
    return 1 - len(set(grams)) / len(grams) if grams else None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.fmean(values), 4) if values else None


def length_distribution(texts: list[str]) -> dict[str, float]:
    counts = np.array([len(words(text)) for text in texts])
    return {"mean": round(float(counts.mean()), 2), "median": float(np.median(counts)),
            "p10": round(float(np.percentile(counts, 10)), 2), "p90": round(float(np.percentile(counts, 90)), 2)}


def summary_properties(summaries: list[str], documents: list[str]) -> dict:
    """Abstractiveness, compression, repetition, sentence count and length of a system's summaries."""
    return {
        "novel_1gram_share": _mean(novel_ngram_share(s, d, 1) for s, d in zip(summaries, documents)),
        "novel_2gram_share": _mean(novel_ngram_share(s, d, 2) for s, d in zip(summaries, documents)),
        # article words per summary word, over non-empty summaries
        "compression_ratio": _mean(len(words(d)) / len(words(s)) if words(s) else None
                                   for s, d in zip(summaries, documents)),
        "repeated_3gram_share": _mean(repeated_ngram_share(s) for s in summaries),
        "one_sentence_rate": round(sum(sentence_count(s) == 1 for s in summaries) / len(summaries), 4),
        "words": length_distribution(summaries),
    }
