"""Scores beside ROUGE (BLEU, METEOR), properties of summaries, and detectors of generation bugs."""
from __future__ import annotations

import re
import statistics

import numpy as np

from xsumtune.rouge import split_sentences

WORD = re.compile(r"\w+")
TOKEN = re.compile(r"\w+|[^\w\s]")  # words and punctuation, as METEOR's usual word_tokenize splits them
BLEU_ORDER = 4


def words(text: str) -> list[str]:
    """Lowercased words without punctuation: the unit of lengths, n-gram novelty and copying."""
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def sentence_count(text: str) -> int:
    """Sentences as ROUGE-Lsum splits them; text without a word (say a lone ".") has none."""
    return len(split_sentences(text).split("\n")) if words(text) else 0


# BLEU ---------------------------------------------------------------------------------------------

def _bleu():
    from sacrebleu.metrics import BLEU

    # effective_order only changes sentence-level scores, which we never report; it silences a warning
    return BLEU(effective_order=True)


def bleu_statistics(predictions: list[str], references: list[str]) -> np.ndarray:
    """Per example: hypothesis length, reference length, matched and total n-grams for n = 1..4.

    Corpus BLEU is a function of their sums, so a bootstrap resample needs sums, not a rescoring.
    """
    bleu = _bleu()
    rows = []
    for prediction, reference in zip(predictions, references, strict=True):
        score = bleu.sentence_score(prediction, [reference])
        rows.append([score.sys_len, score.ref_len, *score.counts, *score.totals])
    return np.array(rows, dtype=np.int64).reshape(len(rows), 2 + 2 * BLEU_ORDER)


def bleu_from_statistics(summed: np.ndarray) -> float:
    """sacrebleu's corpus BLEU (×100, its default exponential smoothing) from summed statistics."""
    from sacrebleu.metrics import BLEU

    summed = [int(v) for v in summed]
    sys_len, ref_len = summed[:2]
    counts, totals = summed[2:2 + BLEU_ORDER], summed[2 + BLEU_ORDER:]
    return float(BLEU.compute_bleu(counts, totals, sys_len, ref_len, smooth_method="exp").score)


# METEOR -------------------------------------------------------------------------------------------

def load_wordnet():
    """nltk's WordNet reader, or the reason METEOR can't run: (reader, None) or (None, reason)."""
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return wordnet, None
    except LookupError:
        return None, ("nltk WordNet data not found where nltk looks (NLTK_DATA, ~/nltk_data, "
                      "<venv>/nltk_data); `python -m nltk.downloader wordnet` installs it")


def meteor_scores(predictions: list[str], references: list[str], wordnet) -> list[float]:
    """nltk's METEOR (×100) per example: exact, stem and WordNet-synonym matches with a fragmentation penalty."""
    from nltk.translate.meteor_score import meteor_score

    return [100 * meteor_score([TOKEN.findall(reference)], TOKEN.findall(prediction), wordnet=wordnet)
            for prediction, reference in zip(predictions, references, strict=True)]


# Summary properties and bug detectors -------------------------------------------------------------

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


def copied_from_article(summary: str, document: str) -> bool:
    """The whole summary occurs word for word, contiguously, in the article."""
    summary_words = words(summary)
    if not summary_words:
        return False
    padded = f" {' '.join(words(document))} "
    return f" {' '.join(summary_words)} " in padded


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


def bug_detectors(predictions: list[str], documents: list[str], stopped_by_cap: list[bool] | None = None,
                  errors: list[str | None] | None = None, leading_newline: list[bool] | None = None) -> dict:
    """Shares of predictions that show a generation bug; the cap, error and leading-newline detectors need
    a model's output."""
    total = len(predictions)

    def share(flags) -> float:
        return round(sum(flags) / total, 4)

    detectors = {}
    if errors is not None:
        detectors["failed"] = share(error is not None for error in errors)
    if stopped_by_cap is not None:
        detectors["cut_by_cap"] = share(stopped_by_cap)
    if leading_newline is not None:
        # the raw generation began with a blank line (an instruct model's habit after `Summary:`); the
        # prediction is the first line with text, so this is no loss unless the model wrote nothing after
        detectors["leading_newline"] = share(leading_newline)
    detectors["empty"] = share(not words(p) for p in predictions)  # punctuation alone says nothing either
    detectors["multi_sentence"] = share(sentence_count(p) > 1 for p in predictions)
    detectors["copied_from_article"] = share(copied_from_article(p, d) for p, d in zip(predictions, documents))
    return detectors


# Everything for one system ------------------------------------------------------------------------

class Scorer:
    """Every per-example score of summaries against references; optional scores that can't run say why."""

    def __init__(self, bertscore_model: str | None = None, bertscore_layer: int | None = None,
                 batch_size: int = 16, rouge_stemmer: str = "porter"):
        from xsumtune.bertscore import load_bertscorer

        self.rouge_stemmer = rouge_stemmer
        self.wordnet, meteor_skipped = load_wordnet()
        self.bertscorer, bertscore_skipped = load_bertscorer(bertscore_model, bertscore_layer, batch_size)
        self.skipped = {name: reason for name, reason in
                        (("meteor", meteor_skipped), ("bertscore", bertscore_skipped)) if reason}

    def per_example(self, predictions: list[str], references: list[str]) -> dict[str, np.ndarray]:
        from xsumtune.rouge import ROUGE_KEYS, score_corpus

        _, rouge = score_corpus(predictions, references, self.rouge_stemmer)
        scores = {key: np.array([s[key] for s in rouge]) for key in ROUGE_KEYS}
        if self.wordnet is not None:
            scores["meteor"] = np.array(meteor_scores(predictions, references, self.wordnet))
        if self.bertscorer is not None:
            scores.update({k: np.array(v) for k, v in self.bertscorer.score(predictions, references).items()})
        return scores


def corpus_scores(scores: dict[str, np.ndarray], bleu_stats: np.ndarray, resamples: int, seed: int) -> dict:
    """The mean of each per-example score and corpus BLEU, each with its 95% bootstrap interval."""
    from xsumtune.bootstrap import bootstrap, interval, mean_intervals

    intervals = mean_intervals(scores, resamples, seed)
    resampled_bleu = bootstrap(len(bleu_stats), lambda block: np.array(
        [bleu_from_statistics(summed) for summed in bleu_stats[block].sum(axis=1)]), resamples, seed)
    intervals["bleu"] = interval(resampled_bleu)
    return {**{key: round(float(values.mean()), 4) for key, values in scores.items()},
            "bleu": round(bleu_from_statistics(bleu_stats.sum(axis=0)), 4), "ci95": intervals}
