"""Corpus BLEU (sacrebleu's) from per-example statistics, so a bootstrap resample sums instead of rescoring."""
from __future__ import annotations

import numpy as np

BLEU_ORDER = 4


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
