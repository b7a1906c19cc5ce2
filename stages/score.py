"""Score existing predictions against references with the score stage's ROUGE; no model, no torch.

Each file is plain text (one summary per line) or jsonl (fields `prediction` / `reference`).
Prints one JSON object: rouge1, rouge2, rougeL, rougeLsum (F1 ×100, stemmed). --stemmer rouge155 stems as
the Perl ROUGE-1.5.5's -m does, for numbers comparable with papers that report it.
"""
import json

import click

from xsumtune.score.rouge import STEMMERS
from xsumtune.score.scorer import mean_scores, rouge_scores
from xsumtune.score.texts import read_texts


@click.command()
@click.option("--predictions", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--references", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--stemmer", type=click.Choice(STEMMERS), default="porter", show_default=True,
              help="porter: rouge-score's (Hugging Face evaluate's); rouge155: ROUGE-1.5.5's -m (most papers').")
def main(predictions, references, stemmer):
    try:
        rouge = mean_scores(rouge_scores(read_texts(predictions, "prediction"), read_texts(references, "reference"),
                                         stemmer))
    except ValueError as error:
        raise click.ClickException(f"{predictions} vs {references}: {error}") from None
    click.echo(json.dumps(rouge))


if __name__ == "__main__":
    main()
