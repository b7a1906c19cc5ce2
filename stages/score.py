"""Score existing predictions against references with the pipeline's ROUGE; no model needed.

Each file is plain text (one summary per line) or jsonl (fields `prediction` / `reference`).
Prints one JSON object: rouge1, rouge2, rougeL, rougeLsum (F1 ×100, stemmed).
"""
import json

import click

from xsumtune.rouge import score_corpus
from xsumtune.scoring import read_texts


@click.command()
@click.option("--predictions", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--references", required=True, type=click.Path(exists=True, dir_okay=False))
def main(predictions, references):
    try:
        rouge, _ = score_corpus(read_texts(predictions, "prediction"), read_texts(references, "reference"))
    except ValueError as error:
        raise click.ClickException(f"{predictions} vs {references}: {error}") from None
    click.echo(json.dumps(rouge))


if __name__ == "__main__":
    main()
