"""Cleaning, subsets, statistics and bad input, on small inputs whose answers are known."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import write_jsonl
from xsumtune.data.sources import DataError, Report, clean_summary, clean_text, load_split, take_subsets
from xsumtune.data.preprocessing import split_statistics

GOOD = {"id": "1", "document": "A short article.", "summary": "A summary."}


def test_clean_text_normalises_whitespace_and_removes_artifacts():
    raw = ("  The  council\u00a0met\t on Monday.\r\n\r\nMedia playback is not supported on this device\n"
           "It\u200b approved   the plan.  \n\n\n")
    assert clean_text(raw) == "The council met on Monday.\nIt approved the plan."


def test_clean_summary_is_one_line():
    assert clean_summary(" A council\nhas  met. ") == "A council has met."


def test_rows_load_clean_and_ids_become_strings(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [{"id": 7, "document": " Doc  one. ", "summary": "Sum one."}, GOOD])
    rows = load_split(str(tmp_path), "test", "error", Report())
    assert rows == [{"id": "7", "document": "Doc one.", "summary": "Sum one."}, GOOD]


def test_empty_rows_are_counted_and_dropped(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [
        GOOD,
        {"id": "2", "document": "   \n ", "summary": "x"},
        {"id": "3", "document": "text", "summary": ""},
        {"id": "4", "document": "Media playback is unsupported on your device", "summary": "y"},
    ])
    report = Report()
    rows = load_split(str(tmp_path), "train", "error", report)
    assert [row["id"] for row in rows] == ["1", "3"]  # an empty summary is decided per split, in preprocessing
    assert report.dropped == {"empty_document": 2}


BAD_ROWS = [
    ('{"id": "2", "document": "d"}', "row 2: field 'summary': missing", "missing_field"),
    ('{"id": "2", "document": 5, "summary": "s"}', "row 2: field 'document': expected a string", "wrong_type"),
    ('{"id": "2", "document": "d", "summary": ', "row 2: field '-': not valid JSON", "malformed"),
    ('["d", "s"]', "row 2: field '-': expected an object", "malformed"),
    (json.dumps(GOOD), "row 2: field 'id': duplicate id '1'", "duplicate_id"),
    ('{"id": "2", "document": null, "summary": "s"}', "row 2: field 'document': null, expected a string",
     "wrong_type"),
]


@pytest.mark.parametrize("line, message, reason", BAD_ROWS)
def test_bad_rows_error_with_file_row_field_or_are_counted(tmp_path, line, message, reason):
    path = write_jsonl(tmp_path / "test.jsonl", [GOOD, line, {**GOOD, "id": "3"}])
    with pytest.raises(DataError) as error:
        load_split(str(tmp_path), "test", "error", Report())
    assert str(path) in str(error.value) and message in str(error.value)
    report = Report()
    rows = load_split(str(tmp_path), "test", "drop", report)
    assert [row["id"] for row in rows] == ["1", "3"]
    assert report.dropped == {reason: 1}


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"id": "2", "document": "caf\xe9", "summary": "s"}\n')
    with pytest.raises(DataError, match=r"test.jsonl: row 2: .*not UTF-8: byte 0xe9"):
        load_split(str(tmp_path), "test", "error", Report())
    report = Report()
    assert len(load_split(str(tmp_path), "test", "drop", report)) == 1
    assert report.dropped == {"not_utf8": 1}


def test_empty_file_is_an_error(tmp_path):
    (tmp_path / "test.jsonl").write_text("")
    with pytest.raises(DataError, match="test.jsonl: no usable rows"):
        load_split(str(tmp_path), "test", "error", Report())


def test_missing_split_file_is_named(tmp_path):
    with pytest.raises(DataError, match="no file for split 'test'"):
        load_split(str(tmp_path), "test", "error", Report())


def test_csv_and_parquet_load_the_same_rows(tmp_path):
    rows = [GOOD, {"id": "2", "document": "Another, with a comma.", "summary": "S, two."}]
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with open(tmp_path / "a" / "test.csv", "w", newline="") as handle:
        import csv
        writer = csv.DictWriter(handle, fieldnames=["id", "document", "summary"])
        writer.writeheader(), writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "b" / "test.parquet")
    assert load_split(str(tmp_path / "a"), "test", "error", Report()) == rows
    assert load_split(str(tmp_path / "b"), "test", "error", Report()) == rows


def test_a_csv_row_with_too_few_fields_is_named(tmp_path):
    (tmp_path / "test.csv").write_text("id,document,summary\n1,A short article.,A summary.\n2,only a document\n")
    with pytest.raises(DataError, match=r"test.csv: row 3: field '-': 2 fields where the header has 3"):
        load_split(str(tmp_path), "test", "error", Report())
    report = Report()
    assert [row["id"] for row in load_split(str(tmp_path), "test", "drop", report)] == ["1"]
    assert report.dropped == {"malformed": 1}


def test_parquet_with_wrong_schema_is_named(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"id": "1", "text": "d", "summary": "s"}]), tmp_path / "test.parquet")
    with pytest.raises(DataError, match="test.parquet: schema: field 'document' missing"):
        load_split(str(tmp_path), "test", "error", Report())


def test_subsets_are_seeded_and_disjoint_within_a_source():
    source = [{"id": str(i)} for i in range(20)]
    wanted = {"train": ("validation", 12), "validation": ("validation", 5), "test": ("test", None)}
    first = take_subsets({"validation": source, "test": source[:3]}, wanted, seed=1)
    again = take_subsets({"validation": source, "test": source[:3]}, wanted, seed=1)
    other = take_subsets({"validation": source, "test": source[:3]}, wanted, seed=2)
    assert first == again and first != other
    assert (len(first["train"]), len(first["validation"]), len(first["test"])) == (12, 5, 3)
    assert not {r["id"] for r in first["train"]} & {r["id"] for r in first["validation"]}


def test_subsets_pass_over_refused_rows_and_keep_their_size():
    source = [{"id": str(i)} for i in range(20)]
    wanted = {"train": ("validation", 6), "test": ("validation", None)}
    odd = lambda split, row: split == "test" or int(row["id"]) % 2 == 0  # noqa: E731
    subsets = take_subsets({"validation": source}, wanted, seed=1, keep=odd)
    assert len(subsets["train"]) == 6 and all(int(row["id"]) % 2 == 0 for row in subsets["train"])
    # the test split takes every row train didn't draw, refused ones included
    taken = subsets["train"] + subsets["test"]
    assert len(taken) < 20 and len({row["id"] for row in taken}) == len(taken)


def prepare(tmp_path, tokenizer, validation, test, **data):
    from conftest import tiny_params
    from xsumtune.config import load_config
    from xsumtune.data.preprocessing import prepare_splits

    write_jsonl(tmp_path / "validation.jsonl", validation)
    write_jsonl(tmp_path / "test.jsonl", test)
    params = tiny_params()
    params["prompt"]["max_seq_len"] = 48
    params["generate"]["max_new_tokens"] = 8
    params["data"].update({"source": str(tmp_path), "train_split": "validation", "validation_split": "validation",
                           "test_split": "test", "train_size": 3, "validation_size": 2, "test_size": None,
                           "min_test_size": 1, **data})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return prepare_splits(load_config(tmp_path / "params.yaml"), tokenizer)


def article(i: int, **fields) -> dict:
    return {"id": str(i), "document": f"Article {i}: the council met on Monday and agreed a plan for the town.",
            "summary": f"Council agrees plan {i}.", **fields}


LONG_SUMMARY = "The council met on Monday evening and after a long debate agreed a plan " * 6  # > 48 tokens
LONG_DOCUMENT = LONG_SUMMARY * 2  # longer than that summary: only its length in tokens is the problem
TOO_LONG = {"document": LONG_DOCUMENT, "summary": LONG_SUMMARY}
STUB = "A stub."  # shorter than its summary


def test_the_test_split_keeps_every_article_whatever_its_reference(tmp_path, tokenizer):
    validation = [article(i) for i in range(1, 6)] + [article(6, document=STUB), article(7, **TOO_LONG),
                                                      article(8, summary=" ")]
    test = [article(10), article(11, document=STUB), article(12, **TOO_LONG)]
    splits, stats = prepare(tmp_path, tokenizer, validation, test, on_bad_row="drop", validation_size=None)
    assert sorted(row["id"] for row in splits["test"]) == ["10", "11", "12"]
    assert {row["id"] for row in splits["train"] + splits["validation"]} == {"1", "2", "3", "4", "5"}
    assert {k: v for k, v in stats["dropped"].items() if v} == {
        "summary_longer_than_document": 1, "summary_too_long": 1, "empty_summary": 1}
    # a test row is the generation prompt alone: it never holds the summary, so a long one can't break it
    from xsumtune.data.tokenization import PromptEncoder
    encoder = PromptEncoder(tokenizer, "direct")
    for row in splits["test"]:
        assert "labels" not in row and (row["input_ids"], row["truncated"]) == \
            tuple(encoder.encode_prompt(row["document"], 48))
        assert row["prompt_length"] == len(row["input_ids"]) <= 48


def test_a_summary_too_long_to_train_on_stops_only_outside_the_test_split(tmp_path, tokenizer):
    validation = [article(i) for i in range(1, 6)] + [article(7, **TOO_LONG)]
    with pytest.raises(DataError, match=r"\[validation\]: id 7: field 'summary': leaves no room for the article"):
        prepare(tmp_path, tokenizer, validation, [article(10)], train_size=None)
    splits, _ = prepare(tmp_path, tokenizer, validation[:5], [article(10), article(12, **TOO_LONG)])
    assert len(splits["test"]) == 2


def test_an_empty_test_reference_is_a_malformed_row(tmp_path, tokenizer):
    validation = [article(i) for i in range(1, 6)]
    with pytest.raises(DataError, match=r"\[test\]: id 11: field 'summary': empty, so the test article can't"):
        prepare(tmp_path, tokenizer, validation, [article(10), article(11, summary="")])
    splits, stats = prepare(tmp_path, tokenizer, validation, [article(10), article(11, summary="")],
                            on_bad_row="drop")
    assert [row["id"] for row in splits["test"]] == ["10"] and stats["dropped"]["empty_summary"] == 1


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
