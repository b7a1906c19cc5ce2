"""Stage 3: summarize every test article with the fine-tuned (and zero-shot) model; score them against lead-1."""
from pathlib import Path

import click

from stages import fail_cleanly
from xsumtune.checkpoints import GeneratedLog, fingerprint, release
from xsumtune import distributed
from xsumtune.config import check_runtime, load_config
from xsumtune.evaluation import build_prompts, evaluate_systems, run_system
from xsumtune.io import read_parquet, write_json, write_jsonl
from xsumtune.modeling import attach_adapter, load_base_model
from xsumtune.provenance import describe_run
from xsumtune.tokenization import load_tokenizer


@click.command()
@click.option("--params", default="params.yaml", show_default=True)
@click.option("--test-data", required=True, help="Processed test split (.parquet).")
@click.option("--adapter-dir", required=True, help="The trained LoRA adapter.")
@click.option("--metrics", "metrics_path", required=True, help="Metrics of every system (JSON).")
@click.option("--predictions", required=True, help="Per-article predictions and scores (jsonl).")
@click.option("--progress-dir", required=True, help="Generations so far; a killed run resumes from them.")
@click.option("--run-info", help="Where to record the revisions, library versions and device (JSON).")
@fail_cleanly
def main(params, test_data, adapter_dir, metrics_path, predictions, progress_dir, run_info):
    config = load_config(params)
    check_runtime(config, processes=config.evaluate.processes)
    distributed.init()
    progress = Path(progress_dir) / f"rank-{distributed.rank()}" if distributed.world_size() > 1 else progress_dir
    log = GeneratedLog(progress, fingerprint(config.seed, config.prompt, config.model, config.evaluate,
                                             Path(test_data), Path(adapter_dir)))
    tokenizer = load_tokenizer(config.model.tokenizer, config.model.revision)
    rows = read_parquet(test_data)
    prompts = build_prompts(config, tokenizer, rows)
    mine = distributed.shard(prompts)  # every process generates its share; all are gathered in order
    base_model = load_base_model(config.model, config.seed).eval()
    generated = {}
    if config.evaluate.zero_shot:  # before the adapter: merging it changes the base weights in place
        generated["zero_shot"] = distributed.gather_in_order(
            prompts, run_system(config, base_model, tokenizer, mine, "zero-shot", log))
    model = attach_adapter(base_model, adapter_dir, merge=config.evaluate.merge_adapter)
    fine_tuned = distributed.gather_in_order(prompts, run_system(config, model, tokenizer, mine, "fine-tuned", log))
    if not distributed.is_main():
        return  # the main process scores and writes
    generated = {"fine_tuned": fine_tuned, **generated}
    metrics, records = evaluate_systems(config.evaluate, rows, generated)
    write_jsonl(predictions, records)
    write_json(metrics_path, metrics)
    if run_info:
        write_json(run_info, describe_run(config, model))
    release(progress_dir)
    click.echo("evaluate: " + ", ".join(f"{k} {metrics[k]:.2f}" for k in ("rouge1", "rouge2", "rougeL", "bleu"))
               + f" (lead-1 rougeL {metrics['lead_1']['rougeL']:.2f}); generation {metrics['generation']}"
               + (f"; skipped {sorted(metrics['skipped'])}" if metrics["skipped"] else ""))


if __name__ == "__main__":
    main()
