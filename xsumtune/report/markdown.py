"""The evaluation report in markdown: figures per system; best, worst and random examples."""
from __future__ import annotations

import random

from xsumtune.score.plots import SYSTEMS, systems
from xsumtune.score.rouge import ROUGE_KEYS

OPTIONAL = ("meteor", "bertscore_f1")
RANK_BY = "rougeL"
ARTICLE_WORDS = 80  # how much of the article an example shows


def pick_examples(records: list[dict], count: int, seed: int) -> dict[str, list[dict]]:
    """Best and worst by ROUGE-L (ties broken by id, so the pick is stable) and a seeded random sample."""
    ranked = sorted(records, key=lambda r: (-r[RANK_BY], r["id"]))
    return {"Best": ranked[:count],
            "Worst": sorted(records, key=lambda r: (r[RANK_BY], r["id"]))[:count],
            "Random": random.Random(seed).sample(records, min(count, len(records)))}


def honest_bar(metrics: dict) -> str | None:
    """One line: the baseline with the higher ROUGE-L, the bar a fine-tuned model has to clear, and the gain over it."""
    baselines = [(label, key) for label, key in SYSTEMS.items() if key and key in metrics]
    if not baselines:
        return None
    label, key = max(baselines, key=lambda b: metrics[b[1]]["rougeL"])
    others = "".join(f"; {other} {metrics[k]['rougeL']:.2f}" for other, k in baselines if k != key)
    gain = metrics[f"gain_over_{key}"]["rougeL"]
    return (f"The stronger baseline here is {label} (ROUGE-L {metrics[key]['rougeL']:.2f}{others}): the fine-tuned "
            f"model's gain over it is {gain['abs']:+.2f} ROUGE-L [{gain['low']:+.2f}, {gain['high']:+.2f}], "
            f"p={gain['p_value']:.4f}.")


def _interval(m: dict, key: str) -> str:
    ci = m["ci95"][key]
    return f"{m[key]:.2f} [{ci['low']:.2f}, {ci['high']:.2f}]"


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|") or "*(empty)*"


def render(metrics: dict, records: list[dict], documents: dict[str, str], count: int, seed: int,
           figures: dict[str, str] | None = None) -> str:
    """The report; `figures` ({title: path relative to the report}) are embedded after the scores table."""
    by_system = systems(metrics)
    keys = [*ROUGE_KEYS, "bleu", *(k for k in OPTIONAL if k in metrics)]
    out = ["# Evaluation report", "",
           f"{len(records)} test articles. Scores ×100, each with its bootstrap 95% interval in brackets; "
           "lead-1 is the article's first sentence.", "",
           "| system | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    out += [f"| {label} | " + " | ".join(_interval(m, k) for k in keys) + " |" for label, m in by_system.items()]
    bar = honest_bar(metrics)
    if bar:
        out += ["", bar]
    for title, path in (figures or {}).items():
        out += ["", f"![{title}]({path})"]

    gains = [(label, metrics[f"gain_over_{key}"]) for label, key in SYSTEMS.items() if f"gain_over_{key}" in metrics]
    if gains:
        out += ["", "## Fine-tuned minus each baseline (paired)", "",
                "| baseline | metric | difference | 95% CI | relative | p-value | wins / ties / losses |",
                "|---|---|---|---|---|---|---|"]
        for label, gain in gains:
            for key in ROUGE_KEYS:
                g = gain[key]
                relative = "n/a" if g["rel_pct"] is None else f"{g['rel_pct']:+.1f}%"
                out.append(f"| {label} | {key} | {g['abs']:+.2f} | [{g['low']:+.2f}, {g['high']:+.2f}] | {relative} "
                           f"| {g['p_value']:.4f} | {g['wins']} / {g['ties']} / {g['losses']} |")

    out += ["", "## Summaries against the references", "",
            "| | words mean | median | p10-p90 | one sentence | novel 1-grams | novel 2-grams "
            "| compression | repeated 3-grams |", "|---" * 9 + "|"]
    for label, properties in [*((lbl, m["summary"]) for lbl, m in by_system.items()), ("references", metrics["references"])]:
        w = properties["words"]
        cells = [properties[k] for k in ("one_sentence_rate", "novel_1gram_share", "novel_2gram_share",
                                         "compression_ratio", "repeated_3gram_share")]
        out.append(f"| {label} | {w['mean']} | {w['median']} | {w['p10']}-{w['p90']} | "
                   + " | ".join("n/a" if c is None else f"{c:.3g}" for c in cells) + " |")

    detectors = ("failed", "cut_by_cap", "leading_newline", "empty", "multi_sentence", "copied_from_article")
    out += ["", "## Bug detectors (share of predictions)", "", "| system | " + " | ".join(detectors) + " |",
            "|---" * (len(detectors) + 1) + "|"]
    out += [f"| {label} | " + " | ".join(f"{m['bugs'][d]:.3f}" if d in m["bugs"] else "n/a" for d in detectors) + " |"
            for label, m in by_system.items()]
    if metrics.get("skipped"):
        out += ["", "## Skipped metrics", ""] + [f"- **{name}**: {reason}" for name, reason in metrics["skipped"].items()]

    for group, picked in pick_examples(records, count, seed).items():
        out += ["", f"## {group} examples (ROUGE-L)" if group != "Random" else f"## {group} examples"]
        for record in picked:
            article = words_prefix(documents[record["id"]], ARTICLE_WORDS)
            out += ["", f"### {record['id']}: ROUGE-1/2/L {record['rouge1']:.1f} / {record['rouge2']:.1f} / "
                        f"{record['rougeL']:.1f}", "",
                    f"- **Article**: {_one_line(article)}",
                    f"- **Reference**: {_one_line(record['reference'])}",
                    f"- **Fine-tuned**: {_one_line(record['prediction'])}"]
            out += [f"- **{label.capitalize()}**: {_one_line(record[key + '_prediction'])}"
                    for label, key in SYSTEMS.items() if key and key + "_prediction" in record]
    return "\n".join(out) + "\n"


def words_prefix(text: str, count: int) -> str:
    parts = text.split()
    return " ".join(parts[:count]) + (" …" if len(parts) > count else "")
