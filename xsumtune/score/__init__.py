"""Scoring, without torch: ROUGE, BLEU, METEOR, BERTScore, intervals, paired gains, properties, bug detectors."""
