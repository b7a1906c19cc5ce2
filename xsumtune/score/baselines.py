"""Summaries made without a model, to anchor what a model's scores mean: lead-1."""
from __future__ import annotations

from xsumtune.score.rouge import split_sentences


def lead_1(document: str) -> str:
    """The article's first sentence (the XSum paper's LEAD baseline); documents keep paragraphs on lines."""
    for paragraph in document.split("\n"):
        if paragraph.strip():
            return split_sentences(paragraph).split("\n", 1)[0]
    return ""
