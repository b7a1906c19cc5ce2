"""nltk's METEOR per example, or the reason it can't run (no WordNet data)."""
from __future__ import annotations

import re

TOKEN = re.compile(r"\w+|[^\w\s]")  # words and punctuation, as METEOR's usual word_tokenize splits them


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
