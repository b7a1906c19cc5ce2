"""Bootstrap intervals hold the estimate and shrink with more data; the paired test tells identical from different."""
import json
import random
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, write_jsonl
from xsumtune.score.bootstrap import mean_intervals, paired_comparison
from xsumtune.score.comparison import ComparisonError, compare_predictions, read_predictions
from xsumtune.data.sources import Report, load_split


def test_intervals_contain_the_mean_and_shrink_with_more_examples():
    rng = np.random.default_rng(1)
    widths = []
    for n in (50, 500, 5000):
        scores = rng.uniform(0, 60, size=n)
        ci = mean_intervals({"rouge1": scores}, resamples=500, seed=0)["rouge1"]
        assert ci["low"] <= scores.mean() <= ci["high"]
        widths.append(ci["high"] - ci["low"])
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(10, rel=0.3)  # width ∝ 1/√n


def test_intervals_are_seeded():
    scores = {"rouge1": np.arange(100.0)}
    assert mean_intervals(scores, 300, seed=3) == mean_intervals(scores, 300, seed=3)
    assert mean_intervals(scores, 300, seed=3) != mean_intervals(scores, 300, seed=4)


def test_paired_comparison_by_hand():
    result = paired_comparison([10, 20, 30, 40], [12, 20, 25, 50], resamples=1000, seed=0)
    assert (result["baseline"], result["candidate"], result["abs"]) == (25, 26.75, 1.75)
    assert result["rel_pct"] == 7.0
    assert (result["wins"], result["ties"], result["losses"]) == (2, 1, 1)
    # differences 2, 0, -5, 10: of the 8 sign patterns of ±2 ±5 ±10, six reach |sum| >= 7 (exact p = 0.75)
    assert result["p_value"] == pytest.approx(0.75, abs=0.05)


@pytest.fixture(scope="module")
def sample():
    return load_split(str(ROOT / "data" / "sample"), "test", "error", Report())[:200]


def predictions_file(path, rows, prediction):
    return write_jsonl(path, [{"id": r["id"], "reference": r["summary"], "prediction": prediction(r)} for r in rows])


def corrupt(text: str, seed: int) -> str:
    """Keep a third of the words in shuffled order: a clearly worse summary."""
    words = text.split()
    random.Random(seed).shuffle(words)
    return " ".join(words[: max(1, len(words) // 3)])


def test_identical_files_show_no_difference(tmp_path, sample):
    good = predictions_file(tmp_path / "a.jsonl", sample, lambda r: r["document"].split(".")[0])
    _, pairs = read_predictions(str(good), "prediction", "unused")
    result = compare_predictions(pairs, pairs, resamples=500, seed=0)
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert result[key]["abs"] == 0 and result[key]["low"] == 0 and result[key]["high"] == 0
        assert result[key]["p_value"] == 1.0
        assert (result[key]["wins"], result[key]["losses"], result[key]["ties"]) == (0, 0, len(sample))


def test_good_against_corrupted_is_a_clear_difference(tmp_path, sample):
    good = predictions_file(tmp_path / "good.jsonl", sample, lambda r: r["summary"])
    bad = predictions_file(tmp_path / "bad.jsonl", sample[::-1], lambda r: corrupt(r["summary"], int(r["id"])))
    _, good_pairs = read_predictions(str(good), "prediction", "unused")
    _, bad_pairs = read_predictions(str(bad), "prediction", "unused")  # other order: pairing is by id
    result = compare_predictions(bad_pairs, good_pairs, resamples=500, seed=0)
    for key in ("rouge1", "rougeL"):
        assert result[key]["abs"] > 20 and result[key]["low"] > 0
        assert result[key]["p_value"] < 0.01
        assert result[key]["wins"] > 0.9 * len(sample) and result[key]["losses"] == 0


def test_comparison_scores_with_the_stemmer_asked_for():
    reference = "A child has been finding it."
    baseline, candidate = {"1": (reference, "Nothing in common.")}, {"1": (reference, "Children were found.")}
    # rouge155 matches WordNet's irregular forms (children -> child, were, been -> be): 3 of 3 words, 3 of 6
    assert compare_predictions(baseline, candidate, 10, 0, "rouge155")["rouge1"]["abs"] == pytest.approx(200 / 3)
    assert compare_predictions(baseline, candidate, 10, 0, "porter")["rouge1"]["abs"] == 0


def test_comparing_different_test_sets_is_refused(tmp_path, sample):
    a = predictions_file(tmp_path / "a.jsonl", sample[:10], lambda r: r["summary"])
    b = predictions_file(tmp_path / "b.jsonl", sample[5:15], lambda r: r["summary"])
    with pytest.raises(ComparisonError, match="5 in common"):
        compare_predictions(read_predictions(str(a), "prediction", "-")[1], read_predictions(str(b), "prediction", "-")[1],
                            resamples=10, seed=0)
    broken = write_jsonl(tmp_path / "broken.jsonl", [{"id": "1", "reference": "r", "prediction": "p"}, "{oops"])
    with pytest.raises(ComparisonError, match="broken.jsonl: line 2: not valid JSON"):
        read_predictions(str(broken), "prediction", "-")


def test_compare_command_on_two_files(tmp_path, sample):
    good = predictions_file(tmp_path / "good.jsonl", sample, lambda r: r["summary"])
    bad = predictions_file(tmp_path / "bad.jsonl", sample, lambda r: corrupt(r["summary"], 0))
    result = subprocess.run([sys.executable, "-m", "stages.compare", "--baseline", str(bad), "--candidate", str(good),
                             "--output", str(tmp_path / "out.json")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "| rouge1 |" in result.stdout and "200 articles" in result.stdout
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["rouge1"]["p_value"] < 0.01 and saved["resamples"] == 1000

    missing = subprocess.run([sys.executable, "-m", "stages.compare", "--baseline", "no-such-rev",
                              "--candidate", str(good)], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 1 and "no-such-rev: neither a predictions file nor a revision" in missing.stderr
    assert "Traceback" not in missing.stderr
