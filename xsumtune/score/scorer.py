"""Every per-example score of a system's summaries, and the corpus scores with their bootstrap intervals.

The score stage, `stages.score`, `stages.compare` and `stages.baseline` all score through this module."""
from __future__ import annotations

import numpy as np

from xsumtune.config import ScoreConfig
from xsumtune.score.bertscore import load_bertscorer
from xsumtune.score.bleu import bleu_from_statistics, bleu_statistics
from xsumtune.score.bootstrap import bootstrap, interval, mean_intervals, paired_comparison
from xsumtune.score.meteor import load_wordnet, meteor_scores
from xsumtune.score.rouge import ROUGE_KEYS, score_corpus


def rouge_scores(predictions: list[str], references: list[str], stemmer: str) -> dict[str, np.ndarray]:
    """Per example and ROUGE key, the F1 (×100)."""
    _, rouge = score_corpus(predictions, references, stemmer)
    return {key: np.array([s[key] for s in rouge]) for key in ROUGE_KEYS}


class Scorer:
    """Every per-example score of summaries against references; optional scores that can't run say why."""

    def __init__(self, bertscore_model: str | None = None, bertscore_layer: int | None = None,
                 batch_size: int = 16, rouge_stemmer: str = "porter"):
        self.rouge_stemmer = rouge_stemmer
        self.wordnet, meteor_skipped = load_wordnet()
        self.bertscorer, bertscore_skipped = load_bertscorer(bertscore_model, bertscore_layer, batch_size)
        self.skipped = {name: reason for name, reason in
                        (("meteor", meteor_skipped), ("bertscore", bertscore_skipped)) if reason}

    @classmethod
    def from_config(cls, config: ScoreConfig) -> Scorer:
        return cls(config.bertscore_model, config.bertscore_layer, config.bertscore_batch_size, config.rouge_stemmer)

    def per_example(self, predictions: list[str], references: list[str]) -> dict[str, np.ndarray]:
        scores = rouge_scores(predictions, references, self.rouge_stemmer)
        if self.wordnet is not None:
            scores["meteor"] = np.array(meteor_scores(predictions, references, self.wordnet))
        if self.bertscorer is not None:
            scores.update({k: np.array(v) for k, v in self.bertscorer.score(predictions, references).items()})
        return scores


def mean_scores(scores: dict[str, np.ndarray]) -> dict[str, float]:
    return {key: round(float(values.mean()), 4) for key, values in scores.items()}


def corpus_scores(scores: dict[str, np.ndarray], bleu_stats: np.ndarray, resamples: int, seed: int) -> dict:
    """The mean of each per-example score and corpus BLEU, each with its 95% bootstrap interval."""
    intervals = mean_intervals(scores, resamples, seed)
    resampled_bleu = bootstrap(len(bleu_stats), lambda block: np.array(
        [bleu_from_statistics(summed) for summed in bleu_stats[block].sum(axis=1)]), resamples, seed)
    intervals["bleu"] = interval(resampled_bleu)
    return {**mean_scores(scores),
            "bleu": round(bleu_from_statistics(bleu_stats.sum(axis=0)), 4), "ci95": intervals}


def score_system(scorer: Scorer, predictions: list[str], references: list[str],
                 config: ScoreConfig) -> tuple[dict, dict[str, np.ndarray]]:
    """(corpus scores with intervals, per-example scores) of one system's summaries."""
    scores = scorer.per_example(predictions, references)
    corpus = corpus_scores(scores, bleu_statistics(predictions, references), config.bootstrap_resamples,
                           config.bootstrap_seed)
    return corpus, scores


def gains(candidate: dict[str, np.ndarray], baseline: dict[str, np.ndarray], resamples: int, seed: int) -> dict:
    """Per ROUGE key: absolute (points) and relative (%) gain, its 95% interval, p-value, wins/ties/losses."""
    return {key: paired_comparison(baseline[key], candidate[key], resamples, seed) for key in ROUGE_KEYS}
