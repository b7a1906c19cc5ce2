"""The bad-input corpus: each case gives a clear error naming file, row and field, or a counted drop."""
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, tiny_params
from xsumtune.config import load_config
from xsumtune.data.sources import DataError, Report, load_split
from xsumtune.data.preprocessing import prepare_splits

CORPUS = ROOT / "tests" / "fixtures" / "bad-input"

# case: (message with on_bad_row: error, or None if it loads; drops counted with on_bad_row: drop)
CASES = {
    "malformed-json": ("row 2: field '-': not valid JSON", {"malformed": 1}),
    "missing-field": ("row 2: field 'summary': missing", {"missing_field": 1}),
    "wrong-type": ("row 2: field 'summary': expected a string, got int", {"wrong_type": 1}),
    "non-utf8": ("row 2: field '-': not UTF-8: byte 0xe9", {"not_utf8": 1}),
    "duplicate-ids": ("row 2: field 'id': duplicate id '1'", {"duplicate_id": 1}),
    "null-field": ("row 2: field 'summary': null, expected a string", {"wrong_type": 1}),
    # kept when loading: real XSum holds stub articles shorter than their summary, and only a training split
    # passes over them (preprocessing); the test split scores every article
    "summary-longer-than-article": (None, {}),
    "empty-strings": (None, {"empty_document": 1}),  # an empty summary is decided per split, in preprocessing
    "long-document": (None, {}),  # kept; preprocess cuts the article to fit
    "bom": (None, {}),  # a UTF-8 byte order mark before the first row is not part of it
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_row(case):
    message, dropped = CASES[case]
    source = str(CORPUS / case)
    if message is None:
        report = Report()
        assert load_split(source, "test", "error", report)
        assert report.dropped == dropped
    else:
        with pytest.raises(DataError) as error:
            load_split(source, "test", "error", Report())
        assert f"{case}/test.jsonl: {message}" in str(error.value)
    report = Report()
    rows = load_split(source, "test", "drop", report)
    assert report.dropped == dropped and rows and all(row["document"] for row in rows)


def test_a_csv_file_with_a_byte_order_mark_loads():
    rows = load_split(str(CORPUS / "bom-csv"), "test", "error", Report())
    assert [row["id"] for row in rows] == ["1", "2"] and rows[0]["document"].endswith("Monday, and agreed a plan.")


@pytest.mark.parametrize("case, message", [
    ("empty-file", r"empty-file/test.jsonl: no usable rows \(dropped: none; the file is empty\)"),
    ("wrong-schema", "wrong-schema/test.parquet: schema: field 'document' missing"),
    # the unclosed quote swallows the rest of the file: row 3 and what follows can't be told apart, so even
    # data.on_bad_row: drop stops
    ("unbalanced-quote", r"unbalanced-quote/test.csv: row 3 \(line 3\): field 'document': unbalanced quote"),
])
@pytest.mark.parametrize("policy", ["error", "drop"])
def test_unusable_file(case, message, policy):
    with pytest.raises(DataError, match=message):
        load_split(str(CORPUS / case), "test", policy, Report())


def preprocess(tmp_path, case, policy, **data):
    params = tiny_params()
    params["data"].update({"source": str(CORPUS / case), "train_split": "test", "validation_split": "test",
                           "test_split": "test", "train_size": 1, "validation_size": 1, "test_size": None,
                           "on_bad_row": policy, "min_test_size": 1, **data})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, "-m", "stages.preprocess", "--params", str(tmp_path / "params.yaml"),
                           "--out-dir", str(tmp_path / "out"), "--stats", str(tmp_path / "stats.json")],
                          cwd=ROOT, capture_output=True, text=True)


MINIMUM = dict(train_split="validation", validation_split="validation", train_size=4, validation_size=2,
               min_test_size=4)
# the preprocess stage runs the tests here check: name: (case, data.on_bad_row, other data changes)
RUNS = {**{f"{case}-error": (case, "error", {}) for case in ("malformed-json", "non-utf8", "wrong-schema", "empty-file",
                                                               "long-document")},
        "malformed-json-drop": ("malformed-json", "drop", {}), "one-row-test-minimum": ("one-row-test", "error", MINIMUM)}


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory):
    """Each run in RUNS, each its own process, all at once (they mostly import, on one core): name: (the
    completed process, its directory)."""
    import concurrent.futures

    folders = {name: tmp_path_factory.mktemp(name) for name in RUNS}
    tiny_params()  # composed here first: Hydra's composition is not thread-safe, and is cached after
    with concurrent.futures.ThreadPoolExecutor(len(RUNS)) as pool:
        results = pool.map(lambda name: preprocess(folders[name], RUNS[name][0], RUNS[name][1], **RUNS[name][2]), RUNS)
        return {name: (result, folders[name]) for name, result in zip(RUNS, results)}


@pytest.mark.parametrize("case", ["malformed-json", "non-utf8", "wrong-schema", "empty-file"])
def test_preprocess_stops_with_one_line_and_writes_nothing(preprocessed, case):
    result, tmp_path = preprocessed[f"{case}-error"]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"bad-input/{case}/test." in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "stats.json").exists()


def test_preprocess_counts_drops_in_its_statistics(preprocessed):
    result, tmp_path = preprocessed["malformed-json-drop"]
    assert result.returncode == 0, result.stderr
    import json
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["dropped"]["malformed"] == 1


def test_long_document_is_truncated_not_rejected(preprocessed):
    result, tmp_path = preprocessed["long-document-error"]
    assert result.returncode == 0, result.stderr
    import json
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert sum(stats[s]["truncated_share"] * stats[s]["examples"] for s in ("train", "validation", "test")) == 1
    assert max(stats[s]["tokens_p99"] for s in ("train", "validation", "test")) <= 512


def prepared(tmp_path, case, tokenizer, **data):
    """prepare_splits in this process, on the preprocess helper's params."""
    params = tiny_params()
    params["data"].update({"source": str(CORPUS / case), "train_split": "validation",
                           "validation_split": "validation", "test_split": "test", "train_size": 4,
                           "validation_size": 2, "test_size": None, **data})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return prepare_splits(load_config(tmp_path / "params.yaml"), tokenizer)


def test_an_empty_test_file_lists_its_own_drops_not_another_splits(tmp_path, tokenizer):
    # validation.jsonl beside it has an empty document, dropped and counted before the test file loads
    with pytest.raises(DataError) as error:
        prepared(tmp_path, "empty-file", tokenizer)
    assert str(error.value).endswith("empty-file/test.jsonl: no usable rows (dropped: none; the file is empty)")


def test_a_test_split_below_the_minimum_stops_with_one_line(preprocessed, tmp_path, tokenizer):
    result, ran = preprocessed["one-row-test-minimum"]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "split 'test': 1 articles" in lines[0] and "data.min_test_size=4" in lines[0]
    assert not (ran / "out").exists() and not (ran / "stats.json").exists()
    splits, _ = prepared(tmp_path, "one-row-test", tokenizer, min_test_size=1)
    assert len(splits["test"]) == 1
