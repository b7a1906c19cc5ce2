"""What lead-1 (each article's first sentence) scores on a split of a data source; no model needed.

    python -m stages.baseline --source data/sample --split test

Prints one JSON object: ROUGE, BLEU (×100) and their bootstrap 95% intervals, scored as the score stage
scores, with the params file's score section.
"""
import json

import click

from stages import fail_cleanly
from xsumtune.config import load_config
from xsumtune.data.sources import Report, load_split
from xsumtune.score.baselines import lead_1
from xsumtune.score.scorer import Scorer, score_system


@click.command()
@click.option("--source", required=True, help="A data directory, as data.source.")
@click.option("--split", required=True, help="The split to score, e.g. test.")
@click.option("--params", default="params.yaml", show_default=True)
@fail_cleanly
def main(source, split, params):
    config = load_config(params)
    rows = load_split(source, split, config.data.on_bad_row, Report())
    summaries = [lead_1(row["document"]) for row in rows]
    result, _ = score_system(Scorer.from_config(config.score), summaries, [row["summary"] for row in rows],
                             config.score)
    click.echo(json.dumps({"examples": len(rows), **result}))


if __name__ == "__main__":
    main()
