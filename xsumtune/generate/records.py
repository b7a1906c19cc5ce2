"""One generation per article, and the file of them the generate stage writes and the score stage reads.

No torch here: scoring reads these records without loading a model."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from xsumtune.io import atomic_dir, read_jsonl, write_jsonl


@dataclass(frozen=True)
class Generated:
    id: str
    prediction: str
    tokens: int  # new tokens generated, eos excluded
    stopped_by_cap: bool  # ran to max_new_tokens before eos and before its first line with text ended
    error: str | None = None
    token_ids: tuple[int, ...] = ()  # the new tokens before eos
    leading_newline: bool = False  # the raw generation's first line was blank: its text came after a line break

    @classmethod
    def from_row(cls, row: dict) -> Generated:
        return cls(**{**row, "token_ids": tuple(row["token_ids"])})


def write_generations(directory: str | Path, generated: dict[str, list[Generated]]) -> None:
    """<directory>/<system>.jsonl for each system, one line an article, in the test split's order."""
    with atomic_dir(directory) as scratch:
        for system, results in generated.items():
            write_jsonl(scratch / f"{system}.jsonl", (dataclasses.asdict(g) for g in results))


def read_generations(directory: str | Path) -> dict[str, list[Generated]]:
    """{system: generations} from what write_generations wrote; fine_tuned first."""
    paths = sorted(Path(directory).glob("*.jsonl"), key=lambda path: (path.stem != "fine_tuned", path.stem))
    if not any(path.stem == "fine_tuned" for path in paths):
        raise FileNotFoundError(f"{directory}: no fine_tuned.jsonl: run the generate stage first")
    return {path.stem: [Generated.from_row(row) for row in read_jsonl(path)] for path in paths}
