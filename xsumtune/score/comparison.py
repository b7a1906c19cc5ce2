"""Paired comparison of two sets of predictions on the same articles, read from files or `dvc exp` revisions."""
from __future__ import annotations

import json
from pathlib import Path

from xsumtune.score.rouge import ROUGE_KEYS
from xsumtune.score.scorer import gains, rouge_scores


class ComparisonError(ValueError):
    """Predictions that can't be compared; the message names the source and the line or id."""


def read_predictions(source: str, field: str, path_in_rev: str) -> tuple[str, dict[str, tuple[str, str]]]:
    """(a name for the source, {id: (reference, prediction)}).

    source: a predictions file (jsonl with `id`, `reference` and `field` on each line), or else a Git
    revision or `dvc exp` name whose `path_in_rev` is read through DVC (so from its cache).
    """
    if Path(source).is_file():
        name, text = source, Path(source).read_text(encoding="utf-8")
    else:
        import dvc.api

        name = f"{source}:{path_in_rev}"
        try:
            with dvc.api.open(path_in_rev, rev=source, encoding="utf-8") as handle:
                text = handle.read()
        except Exception as error:  # dvc raises many types here; all mean "not there"
            raise ComparisonError(f"{source}: neither a predictions file nor a revision holding {path_in_rev} "
                                  f"({type(error).__name__}: {error})") from None
    pairs = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ComparisonError(f"{name}: line {number}: not valid JSON: {error.msg}") from None
        for key in ("id", "reference", field):
            if not isinstance(row, dict) or not isinstance(row.get(key), str):
                raise ComparisonError(f"{name}: line {number}: field {key!r}: missing or not a string")
        if row["id"] in pairs:
            raise ComparisonError(f"{name}: line {number}: duplicate id {row['id']!r}")
        pairs[row["id"]] = (row["reference"], row[field])
    if not pairs:
        raise ComparisonError(f"{name}: no predictions")
    return name, pairs


def compare_predictions(baseline: dict[str, tuple[str, str]], candidate: dict[str, tuple[str, str]],
                        resamples: int, seed: int, stemmer: str = "porter") -> dict:
    """Candidate minus baseline per ROUGE key, paired by article id; both must cover the same articles."""
    if set(baseline) != set(candidate):
        common = len(set(baseline) & set(candidate))
        raise ComparisonError(f"baseline has {len(baseline)} articles and candidate {len(candidate)}, {common} in "
                              "common: a paired comparison needs predictions for the same test articles")
    ids = list(baseline)  # the baseline file's order: resamples then match the score stage's gains
    for id_ in ids:
        if baseline[id_][0] != candidate[id_][0]:
            raise ComparisonError(f"id {id_!r}: the two references differ: not the same test set")
    references = [baseline[id_][0] for id_ in ids]
    baseline_scores = rouge_scores([baseline[id_][1] for id_ in ids], references, stemmer)
    candidate_scores = rouge_scores([candidate[id_][1] for id_ in ids], references, stemmer)
    return {"examples": len(ids), "resamples": resamples,
            **gains(candidate_scores, baseline_scores, resamples, seed)}


def comparison_table(result: dict) -> str:
    """A markdown table of a compare_predictions result."""
    lines = ["| metric | baseline | candidate | difference | 95% CI | p-value | wins / ties / losses |",
             "|---|---|---|---|---|---|---|"]
    for key in ROUGE_KEYS:
        r = result[key]
        lines.append(f"| {key} | {r['baseline']:.2f} | {r['candidate']:.2f} | {r['abs']:+.2f} | "
                     f"[{r['low']:+.2f}, {r['high']:+.2f}] | {r['p_value']:.4f} | "
                     f"{r['wins']} / {r['ties']} / {r['losses']} |")
    return "\n".join(lines)
