"""Cleaning, subsets, statistics and bad input, on small inputs whose answers are known."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_jsonl
from xsumtune.data import DataError, Report, clean_summary, clean_text, load_split, take_subsets
from xsumtune.preprocessing import split_statistics

GOOD = {"id": "1", "document": "A short article.", "summary": "A summary."}


def test_clean_text_normalises_whitespace_and_removes_artifacts():
    raw = ("  The  council\u00a0met\t on Monday.\r\n\r\nMedia playback is not supported on this device\n"
           "It\u200b approved   the plan.  \n\n\n")
    assert clean_text(raw) == "The council met on Monday.\nIt approved the plan."


def test_clean_summary_is_one_line():
    assert clean_summary(" A council\nhas  met. ") == "A council has met."


def test_rows_load_clean_and_ids_become_strings(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [{"id": 7, "document": " Doc  one. ", "summary": "Sum one."}, GOOD])
    rows = load_split(str(tmp_path), "test", None, "error", Report())
    assert rows == [{"id": "7", "document": "Doc one.", "summary": "Sum one."}, GOOD]


def test_empty_rows_are_counted_and_dropped(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [
        GOOD,
        {"id": "2", "document": "   \n ", "summary": "x"},
        {"id": "3", "document": "text", "summary": ""},
        {"id": "4", "document": "Media playback is unsupported on your device", "summary": "y"},
    ])
    report = Report()
    rows = load_split(str(tmp_path), "train", None, "error", report)
    assert [row["id"] for row in rows] == ["1"]
    assert report.dropped == {"empty_document": 2, "empty_summary": 1}


BAD_ROWS = [
    ('{"id": "2", "document": "d"}', "row 2: field 'summary': missing", "missing_field"),
    ('{"id": "2", "document": 5, "summary": "s"}', "row 2: field 'document': expected a string", "wrong_type"),
    ('{"id": "2", "document": "d", "summary": ', "row 2: field '-': not valid JSON", "malformed"),
    ('["d", "s"]', "row 2: field '-': expected an object", "malformed"),
    (json.dumps(GOOD), "row 2: field 'id': duplicate id '1'", "duplicate_id"),
]


@pytest.mark.parametrize("line, message, reason", BAD_ROWS)
def test_bad_rows_error_with_file_row_field_or_are_counted(tmp_path, line, message, reason):
    path = write_jsonl(tmp_path / "test.jsonl", [GOOD, line, {**GOOD, "id": "3"}])
    with pytest.raises(DataError) as error:
        load_split(str(tmp_path), "test", None, "error", Report())
    assert str(path) in str(error.value) and message in str(error.value)
    report = Report()
    rows = load_split(str(tmp_path), "test", None, "drop", report)
    assert [row["id"] for row in rows] == ["1", "3"]
    assert report.dropped == {reason: 1}


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"id": "2", "document": "caf\xe9", "summary": "s"}\n')
    with pytest.raises(DataError, match=r"test.jsonl: row 2: .*not UTF-8: byte 0xe9"):
        load_split(str(tmp_path), "test", None, "error", Report())
    report = Report()
    assert len(load_split(str(tmp_path), "test", None, "drop", report)) == 1
    assert report.dropped == {"not_utf8": 1}


def test_empty_file_is_an_error(tmp_path):
    (tmp_path / "test.jsonl").write_text("")
    with pytest.raises(DataError, match="test.jsonl: no usable rows"):
        load_split(str(tmp_path), "test", None, "error", Report())


def test_missing_split_file_is_named(tmp_path):
    with pytest.raises(DataError, match="no file for split 'test'"):
        load_split(str(tmp_path), "test", None, "error", Report())


def test_csv_and_parquet_load_the_same_rows(tmp_path):
    rows = [GOOD, {"id": "2", "document": "Another, with a comma.", "summary": "S, two."}]
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with open(tmp_path / "a" / "test.csv", "w", newline="") as handle:
        import csv
        writer = csv.DictWriter(handle, fieldnames=["id", "document", "summary"])
        writer.writeheader(), writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "b" / "test.parquet")
    assert load_split(str(tmp_path / "a"), "test", None, "error", Report()) == rows
    assert load_split(str(tmp_path / "b"), "test", None, "error", Report()) == rows


def test_parquet_with_wrong_schema_is_named(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"id": "1", "text": "d", "summary": "s"}]), tmp_path / "test.parquet")
    with pytest.raises(DataError, match="test.parquet: schema: field 'document' missing"):
        load_split(str(tmp_path), "test", None, "error", Report())


def test_subsets_are_seeded_and_disjoint_within_a_source():
    source = [{"id": str(i)} for i in range(20)]
    wanted = {"train": ("validation", 12), "validation": ("validation", 5), "test": ("test", None)}
    first = take_subsets({"validation": source, "test": source[:3]}, wanted, seed=1)
    again = take_subsets({"validation": source, "test": source[:3]}, wanted, seed=1)
    other = take_subsets({"validation": source, "test": source[:3]}, wanted, seed=2)
    assert first == again and first != other
    assert (len(first["train"]), len(first["validation"]), len(first["test"])) == (12, 5, 3)
    assert not {r["id"] for r in first["train"]} & {r["id"] for r in first["validation"]}


def test_split_statistics_on_known_rows():
    rows = [
        {"document": "one two three", "summary": "a b", "input_ids": [0] * 10, "truncated": False},
        {"document": "one", "summary": "a b c d", "input_ids": [0] * 20, "truncated": True},
    ]
    stats = split_statistics(rows)
    assert stats["examples"] == 2
    assert (stats["document_words_mean"], stats["document_words_median"]) == (2.0, 2.0)
    assert (stats["summary_words_mean"], stats["summary_words_median"]) == (3.0, 3.0)
    assert (stats["tokens_mean"], stats["tokens_median"]) == (15.0, 15.0)
    assert stats["tokens_p95"] == pytest.approx(19.5)
    assert stats["truncated_share"] == 0.5
