"""Load XSum from local files, check every row, clean the text and take seeded subsets."""
from __future__ import annotations

import csv
import io
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

FIELDS = ("id", "document", "summary")
LOCAL_FORMATS = (".jsonl", ".json", ".parquet", ".csv")
# Lines the BBC pages carried into XSum's documents; they say nothing about the article.
BOILERPLATE = re.compile(
    r"^(media playback is (not supported on this device|unsupported on your device)"
    r"|(share this with|email|facebook|messenger|twitter|pinterest|whatsapp|linkedin)"
    r"|copy this link|these are external links and will open in a new window)$",
    re.IGNORECASE,
)
BOM = b"\xef\xbb\xbf"  # some editors start a UTF-8 file with it; json.loads refuses it
INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")


class DataError(ValueError):
    """Input that can't be used; the message names the file, row and field."""


@dataclass
class Report:
    """What loading and cleaning dropped, by reason."""
    dropped: Counter = field(default_factory=Counter)


def clean_text(text: str) -> str:
    """Normalise whitespace and remove formatting artifacts, keeping one newline between paragraphs."""
    text = INVISIBLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = (SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line and not BOILERPLATE.match(line))


def clean_summary(text: str) -> str:
    """A summary is one line: its newlines become spaces."""
    return clean_text(text).replace("\n", " ")


def load_split(source: str, split: str, on_bad_row: str, report: Report) -> list[dict]:
    """Rows {id, document, summary} of one split of a local directory, cleaned; bad rows raise DataError or are
    counted. Only rows without a usable document are dropped here: whether a reference is usable depends on
    the split it goes to (preprocessing decides; the test split keeps every article)."""
    directory = Path(source)
    if not directory.is_dir():
        raise DataError(f"data.source: {source} is not a directory of <split>.jsonl/.parquet/.csv files "
                        "(a hub dataset goes through the download stage: download.dataset, then data.source: data/hub)")
    path = _local_split_file(directory, split)
    rows, seen, dropped = [], set(), Counter()
    for row_number, raw in _read_local(path):
        try:
            row = _check_row(raw)
            if row["id"] in seen:
                raise _BadRow("duplicate_id", "id", f"duplicate id {row['id']!r}")
        except _BadRow as bad:
            if on_bad_row == "error":
                raise DataError(f"{path}: row {row_number}: field {bad.field!r}: {bad.message} "
                                f"(set data.on_bad_row: drop to count and drop such rows)") from None
            dropped[bad.reason] += 1
            continue
        seen.add(row["id"])
        row["document"], row["summary"] = clean_text(row["document"]), clean_summary(row["summary"])
        if row["document"]:
            rows.append(row)
        else:
            dropped["empty_document"] += 1
    report.dropped.update(dropped)
    if not rows:  # this file's own drops: the report also holds the other splits'
        raise DataError(f"{path}: no usable rows (dropped: {dict(dropped) or 'none; the file is empty'})")
    return rows


def take_subsets(rows_by_source: dict[str, list[dict]], wanted: dict[str, tuple[str, int | None]],
                 seed: int, keep: Callable[[str, dict], bool] = lambda split, row: True) -> dict[str, list[dict]]:
    """Seeded subsets; splits drawn from the same source split never share a row.

    wanted maps an output split to (source split, size or None for the rest of it). keep(split, row) says
    whether a drawn row may go to that split; a row it refuses is passed over (the caller counts it), so a
    subset still has its size when the source has enough rows.
    """
    subsets, offsets = {}, Counter()
    orders = {}
    for name, (source_split, size) in wanted.items():
        rows = rows_by_source[source_split]
        if source_split not in orders:
            orders[source_split] = list(range(len(rows)))
            random.Random(seed).shuffle(orders[source_split])
        order = orders[source_split]
        start = position = offsets[source_split]
        subsets[name] = []
        while position < len(order) and (size is None or len(subsets[name]) < size):
            row = rows[order[position]]
            position += 1
            if keep(name, row):
                subsets[name].append(row)
        offsets[source_split] = position
        if not subsets[name]:
            raise DataError(f"split {name!r}: no rows left in source split {source_split!r} "
                            f"({len(rows)} rows, {start} already taken by other splits)")
    return subsets


class _BadRow(Exception):
    def __init__(self, reason: str, field_name: str, message: str):
        super().__init__(message)
        self.reason, self.field, self.message = reason, field_name, message


def _check_row(raw) -> dict:
    if isinstance(raw, _BadRow):
        raise raw
    if not isinstance(raw, dict):
        raise _BadRow("malformed", "-", f"expected an object with fields {FIELDS}, got {type(raw).__name__}")
    row = {}
    for name in FIELDS:
        if name not in raw:
            raise _BadRow("missing_field", name, "missing")
        value = raw[name]
        if value is None:
            raise _BadRow("wrong_type", name, "null, expected a string")
        if name == "id" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # XSum ids are BBC article numbers; some copies store them as integers
        if not isinstance(value, str):
            raise _BadRow("wrong_type", name, f"expected a string, got {type(value).__name__} {value!r:.60}")
        row[name] = value
    return row


def _local_split_file(directory: Path, split: str) -> Path:
    for suffix in LOCAL_FORMATS:
        path = directory / f"{split}{suffix}"
        if path.exists():
            return path
    raise DataError(f"{directory}: no file for split {split!r} (looked for {split}{{{','.join(LOCAL_FORMATS)}}})")


def _read_local(path: Path):
    """Yields (row number, dict or _BadRow); row numbers are 1-based lines for jsonl and csv data rows."""
    if path.suffix == ".parquet":
        yield from _read_parquet(path)
        return
    data = path.read_bytes().removeprefix(BOM)
    if path.suffix == ".csv":
        yield from _read_csv(path, data)
        return
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            yield number, _BadRow("not_utf8", "-", f"not UTF-8: byte 0x{line[error.start]:02x} at column {error.start + 1}")
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as error:
            yield number, _BadRow("malformed", "-", f"not valid JSON: {error.msg} at column {error.colno}")


def _read_csv(path: Path, data: bytes):
    """Rows are numbered as spreadsheets do, the header being row 1. A quoting error can't be skipped: where
    the broken row ends is unknown (an unclosed quote runs to the end of the file), so it stops the load."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8: byte 0x{data[error.start]:02x}; "
                        "a CSV file must be UTF-8 throughout") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header, number = None, 0
    while True:
        line = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise DataError(f"{path}: row {number + 1} (line {line}): {_csv_problem(text, line, header, error)}; "
                            "a quoting error can't be dropped, fix the file") from None
        if not values:
            continue  # a blank line
        number += 1
        if header is None:
            header = values
            missing = [name for name in FIELDS if name not in header]
            if missing:
                raise DataError(f"{path}: header: field {missing[0]!r} missing (header has {header})")
        elif len(values) != len(header):
            yield number, _BadRow("malformed", "-", f"{len(values)} fields where the header has {len(header)}")
        else:
            yield number, dict(zip(header, values))


def _csv_problem(text: str, line: int, header: list[str] | None, error: csv.Error) -> str:
    if "unexpected end of data" not in str(error):
        return f"field '-': not valid CSV: {error}"
    # Read leniently from the row's first line, the unclosed field is the last one the row got.
    rest = "".join(io.StringIO(text, newline="").readlines()[line - 1:])
    fields = next(csv.reader(io.StringIO(rest, newline="")))
    name = header[len(fields) - 1] if header and len(fields) <= len(header) else "-"
    return f"field {name!r}: unbalanced quote: the quoted field opened here never closes"


def _read_parquet(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{path}: not a readable parquet file: {error}") from None
    for name in FIELDS:
        if name not in table.schema.names:
            raise DataError(f"{path}: schema: field {name!r} missing (columns: {table.schema.names})")
        kind = table.schema.field(name).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
                or (name == "id" and pa.types.is_integer(kind))):
            raise DataError(f"{path}: schema: field {name!r} has type {kind}, expected string")
    for number, row in enumerate(table.select(list(FIELDS)).to_pylist(), start=1):
        yield number, row
