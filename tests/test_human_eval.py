"""The human-evaluation sheet: seeded export, import of two raters' copies, agreement, clear errors."""
import csv
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from xsumtune.report.human_eval import (CRITERIA, RatingsError, quadratic_weighted_kappa, read_ratings, sheet_rows,
                                 summarize_ratings, write_sheet)

RECORDS = [{"id": str(i), "prediction": f"Summary {i}.", "reference": "r"} for i in range(20)]
DOCUMENTS = {str(i): f"Article {i}, with a comma\nand a second line." for i in range(20)}


def test_kappa_by_hand():
    assert quadratic_weighted_kappa([1, 2, 3, 5], [1, 2, 3, 5]) == pytest.approx(1.0)
    # observed: (1,1) .25, (1,2) .25, (2,2) .5; marginals (.5, .5) and (.25, .75); disagreement weight 1
    # between 1 and 2: 1 - .25 / (.5 * .75 + .5 * .25) = 0.5
    assert quadratic_weighted_kappa([1, 1, 2, 2], [1, 2, 2, 2]) == pytest.approx(0.5)
    assert quadratic_weighted_kappa([1, 2], [2, 1]) == pytest.approx(-1.0)
    assert quadratic_weighted_kappa([4, 4, 4], [4, 4, 4]) is None  # no variation: chance agreement is total


def test_sheet_is_seeded_with_empty_score_columns(tmp_path):
    rows = sheet_rows(RECORDS, DOCUMENTS, examples=5, seed=0)
    assert rows == sheet_rows(RECORDS, DOCUMENTS, examples=5, seed=0)
    assert [r["id"] for r in rows] != [r["id"] for r in sheet_rows(RECORDS, DOCUMENTS, examples=5, seed=1)]
    assert all(r[c] == "" for r in rows for c in CRITERIA)
    write_sheet(tmp_path / "sheet.csv", rows)
    with open(tmp_path / "sheet.csv", encoding="utf-8", newline="") as handle:
        read_back = list(csv.DictReader(handle))
    assert [r["document"] for r in read_back] == [DOCUMENTS[r["id"]] for r in rows]  # commas and newlines survive


def fill(path, rows, scores, rater=""):
    """A rater's copy of the sheet; scores[i] is the score given on every criterion of row i."""
    filled = [{**row, "rater": rater, **{c: str(scores[i]) for c in CRITERIA}} for i, row in enumerate(rows)]
    write_sheet(path, filled)
    return path


def test_two_raters_give_means_and_agreement(tmp_path):
    rows = sheet_rows(RECORDS, DOCUMENTS, examples=4, seed=0)
    alice = fill(tmp_path / "alice.csv", rows, [1, 1, 2, 2])
    bob = fill(tmp_path / "bob.csv", rows, [1, 2, 2, 2])
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    metrics = tmp_path / "human_eval.json"
    result = subprocess.run([sys.executable, "-m", "stages.human_eval", "--sheet", str(alice), "--sheet", str(bob),
                             "--predictions", str(predictions), "--metrics", str(metrics)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads(metrics.read_text())
    assert (summary["raters"], summary["examples"], summary["ratings"]) == (2, 4, 8)
    assert summary["mean"] == {c: 1.625 for c in CRITERIA}
    assert summary["agreement"]["examples"] == 4
    assert all(summary["agreement"][c] == pytest.approx(0.5) for c in CRITERIA)


def test_one_rater_has_means_and_says_why_there_is_no_agreement(tmp_path):
    rows = sheet_rows(RECORDS, DOCUMENTS, examples=3, seed=0)
    summary = summarize_ratings(read_ratings(fill(tmp_path / "s.csv", rows, [5, 4, 3], rater="carol")))
    assert summary["mean"]["fluency"] == 4.0 and summary["raters"] == 1
    assert "exactly two raters" in summary["agreement_skipped"]


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows[1].update(fluency="good"), "row 3: column 'fluency': expected a whole number from 1 to 5, got 'good'"),
    (lambda rows: rows[0].update(factuality="6"), "row 2: column 'factuality': expected a whole number from 1 to 5"),
    (lambda rows: rows[2].update(relevance=""), "row 4: column 'relevance': empty"),
    (lambda rows: rows[2].update(id=rows[0]["id"]), "row 4: column 'id'"),
])
def test_bad_sheet_names_file_row_and_column(tmp_path, edit, message):
    rows = [{**row, **{c: "3" for c in CRITERIA}} for row in sheet_rows(RECORDS, DOCUMENTS, examples=3, seed=0)]
    edit(rows)
    path = tmp_path / "filled.csv"
    write_sheet(path, rows)
    with pytest.raises(RatingsError) as error:
        read_ratings(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


def test_missing_column_and_another_runs_sheet_are_refused(tmp_path):
    path = tmp_path / "cut.csv"
    path.write_text("id,prediction,rater,relevance,fluency,factuality\n1,x,,3,3,3\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "stages.human_eval", "--sheet", str(path), "--metrics",
                             str(tmp_path / "m.json")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and "cut.csv: row 1: column 'conciseness' missing" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "m.json").exists()

    rows = sheet_rows(RECORDS, DOCUMENTS, examples=2, seed=0)
    stale = fill(tmp_path / "stale.csv", rows, [3, 3])
    with pytest.raises(RatingsError, match="row 2: column 'prediction': differs from the predictions file"):
        read_ratings(stale, {r["id"]: "another summary" for r in RECORDS})
