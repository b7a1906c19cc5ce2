"""Read summaries for scoring from plain text (one per line) or jsonl with a named field."""
from __future__ import annotations

import json
from pathlib import Path


def read_texts(path: str | Path, field: str) -> list[str]:
    """One summary per line; a .jsonl file (or one whose lines are all JSON objects) gives row[field]."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line}: not UTF-8") from None
    while lines and not lines[-1].strip():
        lines.pop()  # a trailing newline is not an empty summary
    if path.suffix != ".jsonl":
        return lines
    texts = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: line {number}: not valid JSON: {error.msg}") from None
        if not isinstance(row, dict) or field not in row:
            raise ValueError(f"{path}: line {number}: field {field!r} missing")
        if not isinstance(row[field], str):
            raise ValueError(f"{path}: line {number}: field {field!r}: expected a string, "
                             f"got {type(row[field]).__name__}")
        texts.append(row[field])
    return texts
