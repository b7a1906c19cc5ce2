"""Stage 4: score every system's generations against the references; no model, no torch.

Writes the headline metrics, every metric with its interval and gain, per-article predictions and plot data."""
import click

from stages import fail_cleanly
from xsumtune.config import load_config
from xsumtune.generate.records import read_generations
from xsumtune.io import read_json, read_parquet, write_json, write_jsonl
from xsumtune.score.plots import length_histogram, rouge_by_system
from xsumtune.score.systems import headline, score_systems


@click.command()
@click.option("--params", default="params.yaml", show_default=True)
@click.option("--test-data", required=True, help="Processed test split (.parquet): the references.")
@click.option("--generations", "generations_dir", required=True, help="The generate stage's <system>.jsonl files.")
@click.option("--train-metrics", help="The train stage's metrics (JSON), for the losses in the headline.")
@click.option("--headline", "headline_path", required=True, help="The few figures experiments lead with (JSON).")
@click.option("--metrics", "metrics_path", required=True, help="Every metric of every system (JSON).")
@click.option("--predictions", required=True, help="Per-article predictions and scores (jsonl).")
@click.option("--rouge-plot", required=True, help="Plot data: ROUGE by system (JSON).")
@click.option("--length-plot", required=True, help="Plot data: prediction and reference lengths (JSON).")
@fail_cleanly
def main(params, test_data, generations_dir, train_metrics, headline_path, metrics_path, predictions, rouge_plot,
         length_plot):
    config = load_config(params).score
    metrics, records = score_systems(config, read_parquet(test_data), read_generations(generations_dir))
    write_jsonl(predictions, records)
    write_json(metrics_path, metrics)
    write_json(headline_path, headline(metrics, read_json(train_metrics) if train_metrics else None))
    write_json(rouge_plot, rouge_by_system(metrics))
    write_json(length_plot, length_histogram(records))
    click.echo("score: " + ", ".join(f"{k} {metrics[k]:.2f}" for k in ("rouge1", "rouge2", "rougeL", "bleu"))
               + f" (lead-1 rougeL {metrics['lead_1']['rougeL']:.2f}); generation {metrics['generation']}"
               + (f"; skipped {sorted(metrics['skipped'])}" if metrics["skipped"] else ""))


if __name__ == "__main__":
    main()
