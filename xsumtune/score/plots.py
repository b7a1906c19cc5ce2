"""Plot data from the scores: ROUGE by system, and the lengths of predictions and references."""
from __future__ import annotations

from collections import Counter

from xsumtune.score.properties import words
from xsumtune.score.rouge import ROUGE_KEYS

SYSTEMS = {"fine-tuned": None, "zero-shot": "zero_shot", "lead-1": "lead_1"}  # label: key in the metrics file
LENGTH_BIN = 5  # words per histogram bin


def systems(metrics: dict) -> dict[str, dict]:
    """{label: that system's metrics} for the systems the metrics file holds."""
    return {label: metrics if key is None else metrics[key] for label, key in SYSTEMS.items()
            if key is None or key in metrics}


def rouge_by_system(metrics: dict) -> list[dict]:
    """Rows for a bar plot: one per system, with each ROUGE key and BLEU."""
    return [{"system": label, **{key: m[key] for key in (*ROUGE_KEYS, "bleu")}} for label, m in systems(metrics).items()]


def length_histogram(records: list[dict]) -> list[dict]:
    """Counts of predictions and references per length bin (words), every bin up to the longest."""
    predictions = Counter(len(words(r["prediction"])) // LENGTH_BIN for r in records)
    references = Counter(len(words(r["reference"])) // LENGTH_BIN for r in records)
    top = max([*predictions, *references])
    return [{"words": b * LENGTH_BIN, "prediction": predictions[b], "reference": references[b]} for b in range(top + 1)]
