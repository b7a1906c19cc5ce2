"""The evaluate stage's logic: prompts → generations → every metric per system, against the baselines."""
from __future__ import annotations

import statistics

import numpy as np

from xsumtune.baselines import lead_1
from xsumtune.bootstrap import paired_comparison
from xsumtune.checkpoints import GeneratedLog
from xsumtune.config import Config, EvaluateConfig
from xsumtune.generation import Generated, generate_summaries
from xsumtune.metrics import Scorer, bleu_statistics, bug_detectors, corpus_scores, summary_properties
from xsumtune.rouge import ROUGE_KEYS
from xsumtune.tokenization import PromptEncoder


def build_prompts(config: Config, tokenizer, rows: list[dict]) -> list[dict]:
    """Generation prompts: the article cut so prompt + max_new_tokens fits max_seq_len."""
    encoder = PromptEncoder(tokenizer, config.prompt.template, config.prompt.chat_template)
    budget = config.prompt.max_seq_len - config.evaluate.max_new_tokens
    return [{"id": row["id"], "prompt_ids": encoder.encode_prompt(row["document"], budget)[0]} for row in rows]


def decoding_options(config: EvaluateConfig) -> dict:
    """`generate` options from the evaluate params; options for a mode that is off are left out."""
    options = {"num_beams": config.num_beams, "do_sample": config.do_sample}
    if config.min_new_tokens:
        options["min_new_tokens"] = config.min_new_tokens
    if config.no_repeat_ngram_size:
        options["no_repeat_ngram_size"] = config.no_repeat_ngram_size
    if config.num_beams > 1:
        options["length_penalty"] = config.length_penalty
    if config.do_sample:
        options.update(temperature=config.temperature, top_p=config.top_p)
    if config.cache == "static":
        options["cache_implementation"] = "static"
    return options


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
    return generate_summaries(model, tokenizer, prompts, batch_size=e.batch_size, max_new_tokens=e.max_new_tokens,
                              seed=e.sample_seed, desc=desc, token_budget=e.token_budget,
                              sort_by_length=e.sort_by_length, on_batch=on_batch, **decoding_options(e))


def paired_by_id(rows: list[dict], generated: list[Generated]) -> list[Generated]:
    """Generations in the rows' order, matched by id: a prediction can't land on another article."""
    by_id = {g.id: g for g in generated}
    if len(by_id) != len(generated) or set(by_id) != {row["id"] for row in rows}:
        raise RuntimeError("generation returned a different set of ids than it was given")
    return [by_id[row["id"]] for row in rows]


def evaluate_systems(config: EvaluateConfig, rows: list[dict],
                     generated: dict[str, list[Generated]]) -> tuple[dict, list[dict]]:
    """(metrics, per-example records) of the fine-tuned model, each generated baseline and lead-1.

    generated: "fine_tuned" and optionally "zero_shot". The fine-tuned model's figures sit at the top
    level; each baseline's under its name, with the fine-tuned model's paired gain over it.
    """
    references = [row["summary"] for row in rows]
    documents = [row["document"] for row in rows]
    outputs = {name: paired_by_id(rows, g) for name, g in generated.items()}
    predictions = {name: [g.prediction for g in out] for name, out in outputs.items()}
    predictions["lead_1"] = [lead_1(document) for document in documents]
    scorer = Scorer(config.bertscore_model, config.bertscore_layer, config.batch_size, config.rouge_stemmer)
    scores = {name: scorer.per_example(texts, references) for name, texts in predictions.items()}

    systems = {}
    for name, texts in predictions.items():
        system = corpus_scores(scores[name], bleu_statistics(texts, references), config.bootstrap_resamples,
                               config.bootstrap_seed)
        system["summary"] = summary_properties(texts, documents)
        out = outputs.get(name)  # None for lead-1: no model, so no token cap and no failures
        if out is None:
            system["bugs"] = bug_detectors(texts, documents)
        else:
            system["bugs"] = bug_detectors(texts, documents, [g.stopped_by_cap for g in out], [g.error for g in out],
                                           [g.leading_newline for g in out])
            system["generation"] = generation_statistics(out)
        systems[name] = system
    metrics = {**systems.pop("fine_tuned"), **systems, "references": summary_properties(references, documents)}
    for baseline in systems:
        metrics[f"gain_over_{baseline}"] = gains(scores["fine_tuned"], scores[baseline], config)
    metrics["skipped"] = scorer.skipped

    fine_tuned = scores["fine_tuned"]
    records = []
    for i, (row, g) in enumerate(zip(rows, outputs["fine_tuned"])):
        record = {"id": row["id"], "reference": row["summary"], "prediction": g.prediction,
                  **{key: round(float(values[i]), 4) for key, values in fine_tuned.items()},
                  "tokens": g.tokens, "stopped_by_cap": g.stopped_by_cap, "error": g.error}
        for baseline in systems:
            record[f"{baseline}_prediction"] = predictions[baseline][i]
        records.append(record)
    return metrics, records


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


def gains(fine_tuned: dict[str, np.ndarray], baseline: dict[str, np.ndarray], config: EvaluateConfig) -> dict:
    """Per ROUGE key: absolute (points) and relative (%) gain, its 95% interval, p-value, wins/ties/losses."""
    return {key: paired_comparison(baseline[key], fine_tuned[key], config.bootstrap_resamples,
                                   config.bootstrap_seed) for key in ROUGE_KEYS}
