"""Human evaluation: a seeded sheet of examples to rate 1-5, and the filled sheets' means and inter-rater agreement."""
from __future__ import annotations

import csv
import io
import itertools
import random
import statistics
from pathlib import Path

import numpy as np

CRITERIA = ("relevance", "fluency", "factuality", "conciseness")
SHEET_COLUMNS = ("id", "document", "prediction", "rater", *CRITERIA)
SCALE = (1, 2, 3, 4, 5)


class RatingsError(ValueError):
    """A filled sheet that can't be used; the message names the file, row and column."""


def sheet_rows(records: list[dict], documents: dict[str, str], examples: int, seed: int) -> list[dict]:
    """`examples` seeded random predictions with their articles, and empty columns to rate.

    The reference is left out: raters judge the summary against the article, not against another summary.
    """
    chosen = sorted(random.Random(seed).sample(range(len(records)), min(examples, len(records))))
    return [{"id": records[i]["id"], "document": documents[records[i]["id"]],
             "prediction": records[i]["prediction"], "rater": "", **{c: "" for c in CRITERIA}} for i in chosen]


def write_sheet(path: str | Path, rows: list[dict]) -> None:
    from xsumtune.io import atomic_path

    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SHEET_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def read_ratings(path: str | Path, predictions: dict[str, str] | None = None) -> list[dict]:
    """Ratings {rater, id, criterion: 1-5...} of one filled sheet. Rows count as a spreadsheet does:
    the header is row 1. An empty `rater` cell means the file's name. predictions ({id: prediction}),
    when given, must match the sheet's: ratings of another run's summaries would be misattributed.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # spreadsheet programs often save a byte-order mark
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise RatingsError(f"{path}: line {line}: not UTF-8; save the sheet as UTF-8 CSV") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    for column in ("id", "prediction", "rater", *CRITERIA):
        if column not in header:
            raise RatingsError(f"{path}: row 1: column {column!r} missing (header has {header})")
    ratings, seen = [], set()
    for row_number, row in enumerate(reader, start=2):
        def fail(column: str, message: str):
            raise RatingsError(f"{path}: row {row_number}: column {column!r}: {message}")

        rater = (row["rater"] or "").strip() or path.stem
        id_ = (row["id"] or "").strip()
        if not id_:
            fail("id", "empty")
        if (rater, id_) in seen:
            fail("id", f"{id_!r} rated twice by {rater!r}")
        seen.add((rater, id_))
        if predictions is not None:
            if id_ not in predictions:
                fail("id", f"{id_!r} is not among the predictions")
            if (row["prediction"] or "") != predictions[id_]:
                fail("prediction", "differs from the predictions file: this sheet rates another run's summaries")
        rating = {"rater": rater, "id": id_}
        for criterion in CRITERIA:
            value = (row[criterion] or "").strip()
            if value not in {str(s) for s in SCALE}:
                fail(criterion, f"expected a whole number from 1 to 5, got {value!r}" if value else
                     "empty: every example needs a score from 1 to 5")
            rating[criterion] = int(value)
        ratings.append(rating)
    if not ratings:
        raise RatingsError(f"{path}: no rated rows")
    return ratings


def quadratic_weighted_kappa(first: list[int], second: list[int], categories=SCALE) -> float | None:
    """Cohen's kappa with quadratic weights for two raters on an ordinal scale; None when undefined
    (both raters gave one and the same score throughout, so chance agreement is already perfect)."""
    index = {c: i for i, c in enumerate(categories)}
    k = len(categories)
    observed = np.zeros((k, k))
    for a, b in zip(first, second, strict=True):
        observed[index[a], index[b]] += 1
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    grid = np.arange(k)
    weights = (grid[:, None] - grid[None, :]) ** 2
    chance = float((weights * expected).sum())
    if chance == 0:
        return None
    return 1 - float((weights * observed).sum()) / chance


def summarize_ratings(ratings: list[dict]) -> dict:
    """Mean score per criterion over all ratings; with exactly two raters, their agreement per criterion
    (quadratic weighted kappa) on the examples both rated."""
    raters = sorted({r["rater"] for r in ratings})
    summary = {
        "raters": len(raters),
        "examples": len({r["id"] for r in ratings}),
        "ratings": len(ratings),
        "mean": {c: round(statistics.fmean(r[c] for r in ratings), 4) for c in CRITERIA},
    }
    if len(raters) != 2:
        summary["agreement_skipped"] = f"agreement is computed for exactly two raters; found {len(raters)}"
        return summary
    by_rater = {rater: {r["id"]: r for r in ratings if r["rater"] == rater} for rater in raters}
    both = sorted(set(by_rater[raters[0]]) & set(by_rater[raters[1]]))
    summary["agreement"] = {"method": "quadratic weighted kappa", "examples": len(both)}
    for criterion in CRITERIA:
        first, second = ([by_rater[rater][id_][criterion] for id_ in both] for rater in raters)
        kappa = quadratic_weighted_kappa(first, second) if both else None
        summary["agreement"][criterion] = None if kappa is None else round(kappa, 4)
    return summary


def read_all_ratings(paths: list[str | Path], predictions: dict[str, str] | None = None) -> list[dict]:
    """Ratings of every sheet; the same rater in two files rating one example is an error."""
    ratings = list(itertools.chain.from_iterable(read_ratings(path, predictions) for path in paths))
    seen = set()
    for rating in ratings:
        key = (rating["rater"], rating["id"])
        if key in seen:
            raise RatingsError(f"rater {key[0]!r} rated id {key[1]!r} in more than one sheet")
        seen.add(key)
    return ratings
