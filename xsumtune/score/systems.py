"""The score stage's logic: each system's generations against the references, every metric and paired gain."""
from __future__ import annotations

import statistics

from xsumtune.config import ScoreConfig
from xsumtune.generate.records import Generated
from xsumtune.score.baselines import lead_1
from xsumtune.score.bugs import bug_detectors
from xsumtune.score.properties import summary_properties
from xsumtune.score.rouge import ROUGE_KEYS
from xsumtune.score.scorer import Scorer, gains, score_system

HEADLINE_SYSTEMS = ("fine_tuned", "zero_shot", "lead_1")


def paired_by_id(rows: list[dict], generated: list[Generated]) -> list[Generated]:
    """Generations in the rows' order, matched by id: a prediction can't land on another article."""
    by_id = {g.id: g for g in generated}
    if len(by_id) != len(generated) or set(by_id) != {row["id"] for row in rows}:
        raise RuntimeError("generation returned a different set of ids than it was given")
    return [by_id[row["id"]] for row in rows]


def score_systems(config: ScoreConfig, rows: list[dict],
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
    scorer = Scorer.from_config(config)

    systems, scores = {}, {}
    for name, texts in predictions.items():
        system, scores[name] = score_system(scorer, texts, references, config)
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
        metrics[f"gain_over_{baseline}"] = gains(scores["fine_tuned"], scores[baseline], config.bootstrap_resamples,
                                                 config.bootstrap_seed)
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


def headline(metrics: dict, training: dict | None = None) -> dict:
    """The few figures `dvc exp show` and `dvc metrics show` lead with, from score_systems' metrics.

    Per system ROUGE-1/2/L; the fine-tuned model's ROUGE-L gain over each baseline and its p-value; the
    shares of failed and empty generations; the train stage's final train and eval loss."""
    systems = {"fine_tuned": metrics, **{name: metrics[name] for name in HEADLINE_SYSTEMS[1:] if name in metrics}}
    result = {}
    for name, system in systems.items():
        result[name] = {key: round(system[key], 2) for key in ROUGE_KEYS if key != "rougeLsum"}
        if "generation" in system:
            result[name] |= {"failed": system["bugs"]["failed"], "empty": system["bugs"]["empty"]}
    for name in systems:
        if name != "fine_tuned":
            gain = metrics[f"gain_over_{name}"]["rougeL"]
            result[f"gain_over_{name}"] = {"rougeL": round(gain["abs"], 2), "p": round(gain["p_value"], 4)}
    if training:
        result["loss"] = {"train": round(training["train_loss"], 4), "eval": round(training["eval_loss"], 4)}
    return result
