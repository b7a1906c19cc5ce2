"""ROUGE the standard way: rouge-score's F1 with stemming, ×100, averaged over examples."""
from __future__ import annotations

import re
import statistics

from rouge_score import rouge_scorer

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
# rougeLsum scores sentence by sentence, and rouge-score finds sentences at newlines. nltk's punkt
# model, the usual splitter, is a download; this rule splits where punkt does on news prose.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'“‘(]?[A-Z0-9])")

_scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)


def split_sentences(text: str) -> str:
    return "\n".join(part for part in SENTENCE_END.split(text.strip()) if part)


def score_pair(prediction: str, reference: str) -> dict[str, float]:
    """Per-example F1 ×100 for each ROUGE key; an empty prediction scores 0."""
    scores = _scorer.score(split_sentences(reference), split_sentences(prediction))
    return {key: float(scores[key].fmeasure) * 100 for key in ROUGE_KEYS}


def score_corpus(predictions: list[str], references: list[str]) -> tuple[dict[str, float], list[dict]]:
    """(mean F1 ×100 per key, per-example scores). Lists must pair one to one."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references; they must pair")
    if not predictions:
        raise ValueError("nothing to score: no predictions")
    per_example = [score_pair(p, r) for p, r in zip(predictions, references)]
    means = {key: round(statistics.fmean(s[key] for s in per_example), 4) for key in ROUGE_KEYS}
    return means, per_example
