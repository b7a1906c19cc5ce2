"""The evaluate stage's logic: prompts → generations → ROUGE and generation statistics, per system."""
from __future__ import annotations

import statistics

from xsumtune.checkpoints import GeneratedLog
from xsumtune.config import Config
from xsumtune.generation import Generated, generate_summaries
from xsumtune.rouge import ROUGE_KEYS, score_corpus
from xsumtune.tokenization import PromptEncoder


def build_prompts(config: Config, tokenizer, rows: list[dict]) -> list[dict]:
    """Generation prompts: the article cut so prompt + max_new_tokens fits max_seq_len."""
    encoder = PromptEncoder(tokenizer, config.prompt.template)
    budget = config.prompt.max_seq_len - config.evaluate.max_new_tokens
    return [{"id": row["id"], "prompt_ids": encoder.encode_prompt(row["document"], budget)[0]} for row in rows]


def run_system(config: Config, model, tokenizer, prompts: list[dict], desc: str,
               log: GeneratedLog | None = None) -> list[Generated]:
    """Generations for every prompt, in order; with a log, those already in it are not generated again."""
    done = log.done(desc) if log else {}
    todo = [p for p in prompts if p["id"] not in done]
    fresh = _generate(config, model, tokenizer, todo, desc,
                      on_batch=(lambda batch: log.append(desc, batch)) if log else None) if todo else []
    by_id = {**done, **{g.id: g for g in fresh}}
    return [by_id[p["id"]] for p in prompts]


def _generate(config: Config, model, tokenizer, prompts: list[dict], desc: str, on_batch) -> list[Generated]:
    e = config.evaluate
    decoding = {"num_beams": e.num_beams, "do_sample": e.do_sample}
    if e.cache == "static":
        decoding["cache_implementation"] = "static"
    return generate_summaries(model, tokenizer, prompts, batch_size=e.batch_size, max_new_tokens=e.max_new_tokens,
                              seed=config.seed, desc=desc, token_budget=e.token_budget,
                              sort_by_length=e.sort_by_length, on_batch=on_batch, **decoding)


def score_system(rows: list[dict], generated: list[Generated]) -> tuple[dict, list[dict]]:
    """(metrics, per-example records). Pairs by id: a prediction can't land on another article."""
    by_id = {g.id: g for g in generated}
    if len(by_id) != len(generated) or set(by_id) != {row["id"] for row in rows}:
        raise RuntimeError("generation returned a different set of ids than it was given")
    ordered = [by_id[row["id"]] for row in rows]
    rouge, per_example = score_corpus([g.prediction for g in ordered], [row["summary"] for row in rows])
    records = [
        {"id": row["id"], "reference": row["summary"], "prediction": g.prediction,
         **{key: round(s[key], 4) for key in ROUGE_KEYS}, "tokens": g.tokens,
         "stopped_by_cap": g.stopped_by_cap, "error": g.error}
        for row, g, s in zip(rows, ordered, per_example)
    ]
    return {**rouge, "generation": generation_statistics(ordered)}, records


def generation_statistics(generated: list[Generated]) -> dict:
    failed = sum(g.error is not None for g in generated)
    return {
        "total": len(generated),
        "succeeded": len(generated) - failed,
        "failed": failed,
        "empty": sum(g.error is None and not g.prediction for g in generated),
        "stopped_by_cap": sum(g.stopped_by_cap for g in generated),
        "prediction_words_mean": round(statistics.fmean(len(g.prediction.split()) for g in generated), 2),
        "prediction_tokens_mean": round(statistics.fmean(g.tokens for g in generated), 2),
    }


def gains(fine_tuned: dict, baseline: dict) -> dict:
    """Absolute (points) and relative (%) gain of the fine-tuned model per ROUGE key."""
    result = {}
    for key in ROUGE_KEYS:
        result[f"{key}_abs"] = round(fine_tuned[key] - baseline[key], 4)
        result[f"{key}_rel_pct"] = round(100 * (fine_tuned[key] - baseline[key]) / baseline[key], 2) \
            if baseline[key] else None
    return result
