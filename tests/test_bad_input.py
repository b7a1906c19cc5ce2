"""The bad-input corpus: each case gives a clear error naming file, row and field, or a counted drop."""
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, tiny_params
from xsumtune.data import DataError, Report, load_split

CORPUS = ROOT / "tests" / "fixtures" / "bad-input"

# case: (message with on_bad_row: error, or None if it loads; drops counted with on_bad_row: drop)
CASES = {
    "malformed-json": ("row 2: field '-': not valid JSON", {"malformed": 1}),
    "missing-field": ("row 2: field 'summary': missing", {"missing_field": 1}),
    "wrong-type": ("row 2: field 'summary': expected a string, got int", {"wrong_type": 1}),
    "non-utf8": ("row 2: field '-': not UTF-8: byte 0xe9", {"not_utf8": 1}),
    "duplicate-ids": ("row 2: field 'id': duplicate id '1'", {"duplicate_id": 1}),
    # always dropped and counted: real XSum holds stub articles shorter than their summary
    "summary-longer-than-article": (None, {"summary_longer_than_document": 1}),
    "empty-strings": (None, {"empty_document": 1, "empty_summary": 1}),
    "long-document": (None, {}),  # kept; preprocess cuts the article to fit
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_row(case):
    message, dropped = CASES[case]
    source = str(CORPUS / case)
    if message is None:
        report = Report()
        assert load_split(source, "test", None, "error", report)
        assert report.dropped == dropped
    else:
        with pytest.raises(DataError) as error:
            load_split(source, "test", None, "error", Report())
        assert f"{case}/test.jsonl: {message}" in str(error.value)
    report = Report()
    rows = load_split(source, "test", None, "drop", report)
    assert report.dropped == dropped and rows and all(row["document"] and row["summary"] for row in rows)


@pytest.mark.parametrize("case, message", [
    ("empty-file", "empty-file/test.jsonl: no usable rows"),
    ("wrong-schema", "wrong-schema/test.parquet: schema: field 'document' missing"),
])
@pytest.mark.parametrize("policy", ["error", "drop"])
def test_unusable_file(case, message, policy):
    with pytest.raises(DataError, match=message):
        load_split(str(CORPUS / case), "test", None, policy, Report())


def preprocess(tmp_path, case, policy):
    params = tiny_params()
    params["data"].update(source=str(CORPUS / case), train_split="test", validation_split="test",
                          test_split="test", train_size=1, validation_size=1, test_size=None, on_bad_row=policy)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, "-m", "stages.preprocess", "--params", str(tmp_path / "params.yaml"),
                           "--out-dir", str(tmp_path / "out"), "--stats", str(tmp_path / "stats.json")],
                          cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize("case", ["malformed-json", "non-utf8", "wrong-schema", "empty-file"])
def test_preprocess_stops_with_one_line_and_writes_nothing(tmp_path, case):
    result = preprocess(tmp_path, case, "error")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"bad-input/{case}/test." in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "stats.json").exists()


def test_preprocess_counts_drops_in_its_statistics(tmp_path):
    result = preprocess(tmp_path, "malformed-json", "drop")
    assert result.returncode == 0, result.stderr
    import json
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["dropped"]["malformed"] == 1


def test_long_document_is_truncated_not_rejected(tmp_path):
    result = preprocess(tmp_path, "long-document", "error")
    assert result.returncode == 0, result.stderr
    import json
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert sum(stats[s]["truncated_share"] * stats[s]["examples"] for s in ("train", "validation", "test")) == 1
    assert max(stats[s]["tokens_p99"] for s in ("train", "validation", "test")) <= 512
