"""Load XSum from the hub or local files, check every row, clean the text and take seeded subsets."""
from __future__ import annotations

import csv
import io
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

FIELDS = ("id", "document", "summary")
LOCAL_FORMATS = (".jsonl", ".json", ".parquet", ".csv")
# Lines the BBC pages carried into XSum's documents; they say nothing about the article.
BOILERPLATE = re.compile(
    r"^(media playback is (not supported on this device|unsupported on your device)"
    r"|(share this with|email|facebook|messenger|twitter|pinterest|whatsapp|linkedin)"
    r"|copy this link|these are external links and will open in a new window)$",
    re.IGNORECASE,
)
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


def load_split(source: str, split: str, revision: str | None, on_bad_row: str, report: Report) -> list[dict]:
    """Rows {id, document, summary} of one split, cleaned; bad rows raise DataError or are counted."""
    local = Path(source)
    if local.is_dir():
        path = _local_split_file(local, split)
        raw_rows = _read_local(path)
    elif local.exists():
        raise DataError(f"{source}: expected a directory of <split>.jsonl/.parquet/.csv files or a hub id")
    else:
        path, raw_rows = f"{source}[{split}]", _read_hub(source, split, revision)
    rows, seen = [], set()
    for row_number, raw in raw_rows:
        try:
            row = _check_row(raw)
            if row["id"] in seen:
                raise _BadRow("duplicate_id", "id", f"duplicate id {row['id']!r}")
        except _BadRow as bad:
            if on_bad_row == "error":
                raise DataError(f"{path}: row {row_number}: field {bad.field!r}: {bad.message} "
                                f"(set data.on_bad_row: drop to count and drop such rows)") from None
            report.dropped[bad.reason] += 1
            continue
        seen.add(row["id"])
        row["document"], row["summary"] = clean_text(row["document"]), clean_summary(row["summary"])
        if not row["document"]:
            report.dropped["empty_document"] += 1
        elif not row["summary"]:
            report.dropped["empty_summary"] += 1
        elif len(row["summary"].split()) > len(row["document"].split()):
            report.dropped["summary_longer_than_document"] += 1  # a stub article: nothing to summarise
        else:
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no usable rows (dropped: {dict(report.dropped) or 'none; the file is empty'})")
    return rows


def take_subsets(rows_by_source: dict[str, list[dict]], wanted: dict[str, tuple[str, int | None]],
                 seed: int) -> dict[str, list[dict]]:
    """Seeded subsets; splits drawn from the same source split never share a row.

    wanted maps an output split to (source split, size or None for the rest of it).
    """
    subsets, offsets = {}, Counter()
    orders = {}
    for name, (source_split, size) in wanted.items():
        rows = rows_by_source[source_split]
        if source_split not in orders:
            orders[source_split] = list(range(len(rows)))
            random.Random(seed).shuffle(orders[source_split])
        order = orders[source_split]
        start = offsets[source_split]
        stop = len(order) if size is None else min(start + size, len(order))
        subsets[name] = [rows[i] for i in order[start:stop]]
        offsets[source_split] = stop
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
        if name not in raw or raw[name] is None:
            raise _BadRow("missing_field", name, "missing")
        value = raw[name]
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
    data = path.read_bytes()
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
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8: byte 0x{data[error.start]:02x}; "
                        "a CSV file must be UTF-8 throughout") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [name for name in FIELDS if name not in (reader.fieldnames or [])]
    if missing and reader.fieldnames:
        raise DataError(f"{path}: header: field {missing[0]!r} missing (header has {reader.fieldnames})")
    for number, row in enumerate(reader, start=2):
        yield number, row


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


def _read_hub(source: str, split: str, revision: str | None):
    import datasets

    try:
        dataset = datasets.load_dataset(source, split=split, revision=revision)
    except Exception as error:  # the hub client raises many types; all mean "can't get it"
        raise DataError(f"{source}: cannot load split {split!r} (revision {revision}): "
                        f"{type(error).__name__}: {error}") from None
    for number, row in enumerate(dataset, start=1):
        yield number, row
