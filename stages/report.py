"""Stage 4: from the predictions, a markdown report, plot data and a sheet for human evaluation."""
from pathlib import Path

import click

from stages import fail_cleanly
from xsumtune.config import load_config
from xsumtune.figures import read_loss_curves, write_figures
from xsumtune.human_eval import sheet_rows, write_sheet
from xsumtune.io import atomic_path, read_json, read_jsonl, read_parquet, write_json
from xsumtune.report import length_histogram, render, rouge_by_system


@click.command()
@click.option("--params", default="params.yaml", show_default=True)
@click.option("--test-data", required=True, help="Processed test split (.parquet): the articles.")
@click.option("--metrics", "metrics_path", required=True, help="The evaluate stage's metrics (JSON).")
@click.option("--predictions", required=True, help="The evaluate stage's predictions (jsonl).")
@click.option("--report", "report_path", required=True, help="Where the markdown report goes.")
@click.option("--rouge-plot", required=True, help="Plot data: ROUGE by system (JSON).")
@click.option("--length-plot", required=True, help="Plot data: prediction and reference lengths (JSON).")
@click.option("--human-eval-sheet", required=True, help="Where the human-evaluation sheet goes (CSV).")
@click.option("--figures-dir", required=True, help="Where the figures go (PNG), linked from the report.")
@click.option("--loss-curves", help="The train stage's dvclive plots directory, for the loss figure.")
@fail_cleanly
def main(params, test_data, metrics_path, predictions, report_path, rouge_plot, length_plot, human_eval_sheet,
         figures_dir, loss_curves):
    config = load_config(params).report
    metrics, records = read_json(metrics_path), read_jsonl(predictions)
    documents = {row["id"]: row["document"] for row in read_parquet(test_data)}
    histogram = length_histogram(records)
    curves = read_loss_curves(loss_curves) if loss_curves else {}
    links = write_figures(metrics, histogram, curves, figures_dir, Path(report_path).parent)
    with atomic_path(report_path) as tmp:
        tmp.write_text(render(metrics, records, documents, config.examples, config.seed, links), encoding="utf-8")
    write_json(rouge_plot, rouge_by_system(metrics))
    write_json(length_plot, histogram)
    write_sheet(human_eval_sheet, sheet_rows(records, documents, config.human_eval_examples, config.seed))
    click.echo(f"report: {report_path} ({len(links)} figures in {figures_dir}), {rouge_plot}, {length_plot}, "
               f"{human_eval_sheet}")


if __name__ == "__main__":
    main()
