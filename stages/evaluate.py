"""Stage 3: generate a summary for every test article with the fine-tuned (and zero-shot) model; ROUGE."""
import click

from stages import fail_cleanly
from xsumtune.config import load_config
from xsumtune.evaluation import build_prompts, gains, run_system, score_system
from xsumtune.io import read_parquet, write_json, write_jsonl
from xsumtune.modeling import load_for_inference
from xsumtune.provenance import describe_run
from xsumtune.tokenization import load_tokenizer


@click.command()
@click.option("--params", default="params.yaml", show_default=True)
@click.option("--test-data", required=True, help="Processed test split (.parquet).")
@click.option("--adapter-dir", required=True, help="The trained LoRA adapter.")
@click.option("--metrics", "metrics_path", required=True, help="ROUGE and generation metrics (JSON).")
@click.option("--predictions", required=True, help="Per-article predictions and ROUGE (jsonl).")
@click.option("--run-info", help="Where to record the revisions, library versions and device (JSON).")
@fail_cleanly
def main(params, test_data, adapter_dir, metrics_path, predictions, run_info):
    config = load_config(params)
    tokenizer = load_tokenizer(config.model.tokenizer, config.model.revision)
    model = load_for_inference(config.model, adapter_dir, config.seed)
    rows = read_parquet(test_data)
    prompts = build_prompts(config, tokenizer, rows)
    metrics, records = score_system(rows, run_system(config, model, tokenizer, prompts, "fine-tuned"))
    if config.evaluate.zero_shot:
        with model.disable_adapter():
            zero_shot, zero_records = score_system(rows, run_system(config, model, tokenizer, prompts, "zero-shot"))
        metrics["zero_shot"] = zero_shot
        metrics["gain_over_zero_shot"] = gains(metrics, zero_shot)
        for record, zero in zip(records, zero_records, strict=True):
            record["zero_shot_prediction"] = zero["prediction"]
    write_jsonl(predictions, records)
    write_json(metrics_path, metrics)
    if run_info:
        write_json(run_info, describe_run(config, model))
    click.echo(f"evaluate: " + ", ".join(f"{k} {metrics[k]:.2f}" for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"))
               + f"; generation {metrics['generation']}")


if __name__ == "__main__":
    main()
