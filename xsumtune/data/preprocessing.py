"""The preprocess stage's logic: load → clean → subset → tokenize, with statistics of what came out."""
from __future__ import annotations

import statistics

import numpy as np

from xsumtune.config import Config
from xsumtune.data.sources import DataError, Report, load_split, take_subsets
from xsumtune.data.tokenization import PromptEncoder

SPLITS = ("train", "validation", "test")


def load_sources(config: Config) -> tuple[dict[str, list[dict]], Report]:
    """Every split file the params name, loaded and checked (rows by split name), and what loading dropped.

    Needs no tokenizer: the preprocess stage loads them first, so a bad file stops it before the tokenizer's
    libraries are imported."""
    data = config.data
    report = Report()
    rows_by_source = {
        source: load_split(data.source, source, data.on_bad_row, report)
        for source in dict.fromkeys(getattr(data, f"{name}_split") for name in SPLITS)
    }
    return rows_by_source, report


def prepare_splits(config: Config, tokenizer, sources: tuple[dict[str, list[dict]], Report] | None = None
                   ) -> tuple[dict[str, list[dict]], dict]:
    """Processed rows per split and the statistics metrics; sources: load_sources(config), loaded here if None.

    Train and validation rows need a reference to learn from: a row whose summary is empty, longer than its
    article or too long for prompt.max_seq_len is passed over and counted. The test split is the standard
    one: no article is left out because of its reference, and its prompts never include the summary."""
    data = config.data
    wanted = {name: (getattr(data, f"{name}_split"), getattr(data, f"{name}_size")) for name in SPLITS}
    rows_by_source, report = sources if sources is not None else load_sources(config)
    encoder = PromptEncoder(tokenizer, config.prompt.template, config.prompt.chat_template)
    max_seq_len = config.prompt.max_seq_len

    def keep(split: str, row: dict) -> bool:
        """Whether a drawn row may go to the split; a refused one is counted, or stops preprocess."""
        problem = None
        if split == "test":  # refused only without any reference: nothing to score it against
            reason = None if row["summary"] else "empty_summary"
            problem = reason and "empty, so the test article can't be scored"
        else:
            reason = reference_problem(row, encoder, max_seq_len)
            if reason == "summary_too_long":
                problem = f"leaves no room for the article within prompt.max_seq_len={max_seq_len}"
        if problem and data.on_bad_row == "error":
            raise DataError(f"{data.source}[{wanted[split][0]}]: id {row['id']}: field 'summary': {problem}; "
                            "set data.on_bad_row: drop to count and drop such rows")
        if reason:
            report.dropped[reason] += 1
        return reason is None

    subsets = take_subsets(rows_by_source, wanted, data.seed, keep)
    processed = {name: [{**row, **encoder.encode(row["document"], row["summary"], max_seq_len)} for row in rows]
                 for name, rows in subsets.items() if name != "test"}
    processed["test"] = [{**row, **generation_prompt(encoder, row["document"], max_seq_len)}
                         for row in subsets["test"]]
    if len(processed["test"]) < data.min_test_size:
        raise DataError(f"split 'test': {len(processed['test'])} articles from {data.source}[{data.test_split}], "
                        f"fewer than data.min_test_size={data.min_test_size}: a score on so few says little; "
                        "use a larger test split or lower data.min_test_size")
    stats = {name: split_statistics(rows) for name, rows in processed.items()}
    stats["dropped"] = {reason: report.dropped.get(reason, 0) for reason in DROP_REASONS}
    return processed, stats


DROP_REASONS = ("empty_document", "empty_summary", "missing_field", "wrong_type", "malformed",
                "not_utf8", "duplicate_id", "summary_longer_than_document", "summary_too_long")


def reference_problem(row: dict, encoder: PromptEncoder, max_seq_len: int) -> str | None:
    """Why a row can't be a training or validation target, or None."""
    if not row["summary"]:
        return "empty_summary"
    if len(row["summary"].split()) > len(row["document"].split()):
        return "summary_longer_than_document"  # a stub article: nothing to summarise
    if not encoder.summary_fits(row["summary"], max_seq_len):
        return "summary_too_long"
    return None


def generation_prompt(encoder: PromptEncoder, document: str, max_seq_len: int) -> dict:
    """A test row's tokens: the generation prompt alone, cut to max_seq_len (generate cuts it further, to leave
    room for generate.max_new_tokens); there is no summary to fit."""
    input_ids, truncated = encoder.encode_prompt(document, max_seq_len)
    return {"input_ids": input_ids, "prompt_length": len(input_ids), "truncated": truncated}


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
