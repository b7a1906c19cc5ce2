"""Import filled human-evaluation sheets: mean scores and, with two raters, their agreement, as metrics.

    python -m stages.human_eval --sheet alice.csv --sheet bob.csv --metrics metrics/human_eval.json

Each sheet is a copy of reports/human_eval.csv (written by the report stage) with the 1-5 columns
filled; the `rater` column, or else the file name, says who rated.
"""
import click

from stages import fail_cleanly
from xsumtune.report.human_eval import RatingsError, read_all_ratings, summarize_ratings
from xsumtune.io import read_jsonl, write_json


@click.command()
@click.option("--sheet", "sheets", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A filled sheet (CSV); repeat for each rater's copy.")
@click.option("--metrics", "metrics_path", required=True, help="Where the human-evaluation metrics go (JSON).")
@click.option("--predictions", type=click.Path(exists=True, dir_okay=False),
              help="Check that the sheets rate these predictions (jsonl), e.g. metrics/predictions.jsonl.")
@fail_cleanly
def main(sheets, metrics_path, predictions):
    expected = {row["id"]: row["prediction"] for row in read_jsonl(predictions)} if predictions else None
    try:
        summary = summarize_ratings(read_all_ratings(list(sheets), expected))
    except RatingsError as error:
        raise click.ClickException(str(error)) from None
    write_json(metrics_path, summary)
    click.echo(f"human evaluation: {summary}")


if __name__ == "__main__":
    main()
