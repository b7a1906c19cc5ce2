"""Generations saved as they finish, so a killed generate stage resumes where it stopped."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from xsumtune.checkpoints import claim
from xsumtune.generate.records import Generated


class GeneratedLog:
    """Generations appended as they finish (a flushed jsonl line each), so a killed evaluation resumes.

    Keyed by (system, id): a resumed run skips what is done, with no duplicates and no gaps."""

    def __init__(self, directory: str | Path, key: str):
        self.path = claim(directory, key) / "generated.jsonl"

    def done(self, system: str) -> dict[str, Generated]:
        results = {}
        if not self.path.exists():
            return results
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line a kill cut short; that article is generated again
            if row.pop("system") == system:
                results[row["id"]] = Generated.from_row(row)
        return results

    def append(self, system: str, generated: list[Generated]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            for result in generated:
                handle.write(json.dumps({"system": system, **dataclasses.asdict(result)}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
