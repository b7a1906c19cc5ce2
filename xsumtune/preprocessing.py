"""The preprocess stage's logic: load → clean → subset → tokenize, with statistics of what came out."""
from __future__ import annotations

import statistics

import numpy as np

from xsumtune.config import Config
from xsumtune.data import DataError, Report, load_split, take_subsets
from xsumtune.tokenization import PromptEncoder

SPLITS = ("train", "validation", "test")


def prepare_splits(config: Config, tokenizer) -> tuple[dict[str, list[dict]], dict]:
    """Processed rows per split and the statistics metrics."""
    data = config.data
    wanted = {name: (getattr(data, f"{name}_split"), getattr(data, f"{name}_size")) for name in SPLITS}
    report = Report()
    rows_by_source = {
        source: load_split(data.source, source, data.revision, data.on_bad_row, report)
        for source in dict.fromkeys(source for source, _ in wanted.values())
    }
    subsets = take_subsets(rows_by_source, wanted, config.seed)
    encoder = PromptEncoder(tokenizer, config.prompt.template)
    processed = {}
    for name, rows in subsets.items():
        processed[name] = []
        for row in rows:
            try:
                encoded = encoder.encode(row["document"], row["summary"], config.prompt.max_seq_len)
            except ValueError as error:
                if data.on_bad_row == "error":
                    raise DataError(f"{data.source}[{wanted[name][0]}]: id {row['id']}: field 'summary': "
                                    f"{error} (prompt.max_seq_len={config.prompt.max_seq_len}); "
                                    "set data.on_bad_row: drop to count and drop such rows") from None
                report.dropped["summary_too_long"] += 1
                continue
            processed[name].append({**row, **encoded})
        if not processed[name]:
            raise DataError(f"split {name!r}: every row was dropped ({dict(report.dropped)})")
    stats = {name: split_statistics(rows) for name, rows in processed.items()}
    stats["dropped"] = {reason: report.dropped.get(reason, 0) for reason in DROP_REASONS}
    return processed, stats


DROP_REASONS = ("empty_document", "empty_summary", "missing_field", "wrong_type", "malformed",
                "not_utf8", "duplicate_id", "summary_longer_than_document", "summary_too_long")


def split_statistics(rows: list[dict]) -> dict:
    document_words = [len(row["document"].split()) for row in rows]
    summary_words = [len(row["summary"].split()) for row in rows]
    tokens = np.array([len(row["input_ids"]) for row in rows])
    return {
        "examples": len(rows),
        "document_words_mean": round(statistics.fmean(document_words), 2),
        "document_words_median": statistics.median(document_words),
        "summary_words_mean": round(statistics.fmean(summary_words), 2),
        "summary_words_median": statistics.median(summary_words),
        "tokens_mean": round(float(tokens.mean()), 2),
        "tokens_median": float(np.median(tokens)),
        "tokens_p95": float(np.percentile(tokens, 95)),
        "tokens_p99": float(np.percentile(tokens, 99)),
        "truncated_share": round(sum(row["truncated"] for row in rows) / len(rows), 4),
    }
