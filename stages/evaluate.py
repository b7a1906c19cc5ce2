"""Stage 3: summarize every test article with the fine-tuned (and zero-shot) model; score them against lead-1."""
import click

from stages import fail_cleanly
from xsumtune.config import load_config
from xsumtune.evaluation import build_prompts, evaluate_systems, run_system
from xsumtune.io import read_parquet, write_json, write_jsonl
from xsumtune.modeling import load_for_inference
from xsumtune.tokenization import load_tokenizer


@click.command()
@click.option("--params", default="params.yaml", show_default=True)
@click.option("--test-data", required=True, help="Processed test split (.parquet).")
@click.option("--adapter-dir", required=True, help="The trained LoRA adapter.")
@click.option("--metrics", "metrics_path", required=True, help="Metrics of every system (JSON).")
@click.option("--predictions", required=True, help="Per-article predictions and scores (jsonl).")
@fail_cleanly
def main(params, test_data, adapter_dir, metrics_path, predictions):
    config = load_config(params)
    tokenizer = load_tokenizer(config.model.tokenizer, config.model.revision)
    model = load_for_inference(config.model, adapter_dir, config.seed)
    rows = read_parquet(test_data)
    prompts = build_prompts(config, tokenizer, rows)
    generated = {"fine_tuned": run_system(config, model, tokenizer, prompts, "fine-tuned")}
    if config.evaluate.zero_shot:
        with model.disable_adapter():
            generated["zero_shot"] = run_system(config, model, tokenizer, prompts, "zero-shot")
    metrics, records = evaluate_systems(config.evaluate, rows, generated)
    write_jsonl(predictions, records)
    write_json(metrics_path, metrics)
    click.echo(f"evaluate: " + ", ".join(f"{k} {metrics[k]:.2f}" for k in ("rouge1", "rouge2", "rougeL", "bleu"))
               + f" (lead-1 rougeL {metrics['lead_1']['rougeL']:.2f}); generation {metrics['generation']}"
               + (f"; skipped {sorted(metrics['skipped'])}" if metrics["skipped"] else ""))


if __name__ == "__main__":
    main()
