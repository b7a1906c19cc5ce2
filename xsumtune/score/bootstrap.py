"""Uncertainty of scores from a finite test set: seeded bootstrap intervals and paired significance tests."""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

CONFIDENCE = 0.95
_BLOCK = 256  # resamples drawn at once: memory stays at _BLOCK × examples indices on the full test set


def resampled_indices(examples: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of bootstrap resamples, each row `examples` indices drawn with replacement."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, _BLOCK):
        yield rng.integers(0, examples, size=(min(_BLOCK, resamples - start), examples))


def bootstrap(examples: int, statistic: Callable[[np.ndarray], np.ndarray], resamples: int,
              seed: int) -> np.ndarray:
    """The statistic on each resample; `statistic` maps a block of index rows to one value per row."""
    if examples == 0:
        raise ValueError("nothing to resample: no examples")
    return np.concatenate([statistic(block) for block in resampled_indices(examples, resamples, seed)])


def interval(values: np.ndarray) -> dict[str, float]:
    """The percentile interval holding CONFIDENCE of the resampled values."""
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return {"low": round(float(low), 4), "high": round(float(high), 4)}


def mean_intervals(scores: dict[str, np.ndarray], resamples: int, seed: int) -> dict[str, dict[str, float]]:
    """A 95% interval for the mean of each per-example score; every key sees the same resamples."""
    matrix = np.column_stack([np.asarray(v, dtype=float) for v in scores.values()])
    values = bootstrap(len(matrix), lambda block: matrix[block].mean(axis=1), resamples, seed)
    return {key: interval(values[:, column]) for column, key in enumerate(scores)}


def paired_comparison(baseline: np.ndarray, candidate: np.ndarray, resamples: int, seed: int) -> dict:
    """Candidate minus baseline on the same examples, in the scores' units.

    The interval is a paired bootstrap of the mean difference. The p-value (two-sided) is a paired
    permutation test: with no real difference each example's difference is as likely negative as
    positive, so its sign is flipped at random and we count how often the mean is as far from 0.
    """
    baseline, candidate = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if baseline.shape != candidate.shape:
        raise ValueError(f"{len(baseline)} baseline scores but {len(candidate)} candidate scores; they must pair")
    difference = candidate - baseline
    observed = float(difference.mean())
    resampled = bootstrap(len(difference), lambda block: difference[block].mean(axis=1), resamples, seed)
    rng = np.random.default_rng([seed, 1])
    as_extreme = 0
    for start in range(0, resamples, _BLOCK):
        signs = rng.choice((-1.0, 1.0), size=(min(_BLOCK, resamples - start), len(difference)))
        # the tolerance keeps float noise in an all-zero difference from counting as "less extreme"
        as_extreme += int((np.abs((signs * difference).mean(axis=1)) >= abs(observed) - 1e-9).sum())
    tie = np.isclose(difference, 0.0, atol=1e-9)
    baseline_mean = float(baseline.mean())
    return {
        "baseline": round(baseline_mean, 4),
        "candidate": round(float(candidate.mean()), 4),
        "abs": round(observed, 4),
        "rel_pct": round(100 * observed / baseline_mean, 2) if baseline_mean else None,
        **interval(resampled),
        "p_value": round((as_extreme + 1) / (resamples + 1), 4),
        "wins": int((~tie & (difference > 0)).sum()),
        "ties": int(tie.sum()),
        "losses": int((~tie & (difference < 0)).sum()),
    }
