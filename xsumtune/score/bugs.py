"""Detectors of generation bugs: the share of predictions that failed, hit the cap, came out empty or copied."""
from __future__ import annotations

from xsumtune.score.properties import sentence_count, words


def copied_from_article(summary: str, document: str) -> bool:
    """The whole summary occurs word for word, contiguously, in the article."""
    summary_words = words(summary)
    if not summary_words:
        return False
    padded = f" {' '.join(words(document))} "
    return f" {' '.join(summary_words)} " in padded


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
