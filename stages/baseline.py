"""What lead-1 (each article's first sentence) scores on a split of a data source; no model needed.

    python -m stages.baseline --source data/sample --split test

Prints one JSON object: ROUGE, BLEU (×100) and their bootstrap 95% intervals, scored as the evaluate
stage scores, with evaluate.bootstrap_resamples, evaluate.bootstrap_seed and evaluate.rouge_stemmer from the
params file.
"""
import json

import click

from stages import fail_cleanly
from xsumtune.baselines import lead_1
from xsumtune.config import load_config
from xsumtune.data import Report, load_split
from xsumtune.metrics import Scorer, bleu_statistics, corpus_scores


@click.command()
@click.option("--source", required=True, help="A data directory, as data.source.")
@click.option("--split", required=True, help="The split to score, e.g. test.")
@click.option("--params", default="params.yaml", show_default=True)
@fail_cleanly
def main(source, split, params):
    config = load_config(params)
    evaluate = config.evaluate
    rows = load_split(source, split, config.data.on_bad_row, Report())
    summaries = [lead_1(row["document"]) for row in rows]
    references = [row["summary"] for row in rows]
    scores = Scorer(rouge_stemmer=evaluate.rouge_stemmer).per_example(summaries, references)
    result = corpus_scores(scores, bleu_statistics(summaries, references), evaluate.bootstrap_resamples,
                           evaluate.bootstrap_seed)
    click.echo(json.dumps({"examples": len(rows), **result}))


if __name__ == "__main__":
    main()
