"""Stage 5: from the scores and predictions, a markdown report, PNG figures and a sheet for human evaluation."""
from pathlib import Path

import click

from stages import fail_cleanly
from xsumtune.config import load_config
from xsumtune.io import atomic_path, read_json, read_jsonl, read_parquet
from xsumtune.report.figures import read_loss_curves, write_figures
from xsumtune.report.human_eval import sheet_rows, write_sheet
from xsumtune.report.markdown import render


@click.command()
@click.option("--params", default="params.yaml", show_default=True)
@click.option("--test-data", required=True, help="Processed test split (.parquet): the articles.")
@click.option("--metrics", "metrics_path", required=True, help="The score stage's metrics (JSON).")
@click.option("--predictions", required=True, help="The score stage's predictions (jsonl).")
@click.option("--length-plot", required=True, help="The score stage's length histogram (JSON).")
@click.option("--report", "report_path", required=True, help="Where the markdown report goes.")
@click.option("--human-eval-sheet", required=True, help="Where the human-evaluation sheet goes (CSV).")
@click.option("--figures-dir", required=True, help="Where the figures go (PNG), linked from the report.")
@click.option("--loss-curves", help="The train stage's dvclive plots directory, for the loss figure.")
@fail_cleanly
def main(params, test_data, metrics_path, predictions, length_plot, report_path, human_eval_sheet, figures_dir,
         loss_curves):
    config = load_config(params).report
    metrics, records = read_json(metrics_path), read_jsonl(predictions)
    documents = {row["id"]: row["document"] for row in read_parquet(test_data)}
    curves = read_loss_curves(loss_curves) if loss_curves else {}
    links = write_figures(metrics, read_json(length_plot), curves, figures_dir, Path(report_path).parent)
    with atomic_path(report_path) as tmp:
        tmp.write_text(render(metrics, records, documents, config.examples, config.seed, links), encoding="utf-8")
    write_sheet(human_eval_sheet, sheet_rows(records, documents, config.human_eval_examples, config.seed))
    click.echo(f"report: {report_path} ({len(links)} figures in {figures_dir}), {human_eval_sheet}")


if __name__ == "__main__":
    main()
