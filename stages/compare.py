"""Is one experiment really better than another? A paired test of their predictions on the same articles.

    python -m stages.compare --baseline <file or rev> --candidate <file or rev>

Each side is a predictions file (jsonl: id, reference, prediction) or a Git revision or `dvc exp`
name, whose metrics/predictions.jsonl is read from DVC's cache. Prints a markdown table: per ROUGE key,
the difference with its 95% bootstrap interval, a permutation-test p-value and per-article wins/ties/losses.
"""
import click

from stages import fail_cleanly
from xsumtune.score.comparison import comparison_table, compare_predictions, read_predictions
from xsumtune.config import load_config
from xsumtune.io import write_json


@click.command()
@click.option("--baseline", required=True, help="Predictions file, Git revision or dvc exp name.")
@click.option("--candidate", required=True, help="Predictions file, Git revision or dvc exp name.")
@click.option("--baseline-field", default="prediction", show_default=True,
              help="The field holding the baseline's summaries, e.g. zero_shot_prediction or lead_1_prediction.")
@click.option("--candidate-field", default="prediction", show_default=True)
@click.option("--path", "path_in_rev", default="metrics/predictions.jsonl", show_default=True,
              help="Where a revision keeps its predictions.")
@click.option("--params", default="params.yaml", show_default=True,
              help="score.bootstrap_resamples, score.bootstrap_seed and score.rouge_stemmer come from here.")
@click.option("--output", help="Also write the result as JSON here.")
@fail_cleanly
def main(baseline, candidate, baseline_field, candidate_field, path_in_rev, params, output):
    score = load_config(params).score
    try:
        baseline_name, baseline_pairs = read_predictions(baseline, baseline_field, path_in_rev)
        candidate_name, candidate_pairs = read_predictions(candidate, candidate_field, path_in_rev)
        result = compare_predictions(baseline_pairs, candidate_pairs, score.bootstrap_resamples,
                                     score.bootstrap_seed, score.rouge_stemmer)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    result = {"baseline": f"{baseline_name} [{baseline_field}]", "candidate": f"{candidate_name} [{candidate_field}]",
              **result}
    if output:
        write_json(output, result)
    click.echo(f"baseline:  {result['baseline']}\ncandidate: {result['candidate']}\n"
               f"{result['examples']} articles, {result['resamples']} resamples\n\n{comparison_table(result)}")


if __name__ == "__main__":
    main()
