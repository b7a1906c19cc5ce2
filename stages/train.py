"""Stage 2: LoRA (or QLoRA) fine-tuning of the base model; writes the adapter and training metrics."""
from pathlib import Path

import click

from stages import fail_cleanly
from xsumtune.config import load_config
from xsumtune.model.runtime import check_runtime


@click.command()
@click.option("--params", default="params.yaml", show_default=True)
@click.option("--train-data", required=True, help="Processed train split (.parquet).")
@click.option("--validation-data", required=True, help="Processed validation split (.parquet).")
@click.option("--adapter-dir", required=True, help="Where the trained LoRA adapter goes.")
@click.option("--live-dir", required=True, help="dvclive directory: metrics.json and loss plots.")
@click.option("--checkpoint-dir", required=True, help="Checkpoints a killed run resumes from (persisted).")
@click.option("--run-info", help="Where to record the revisions, library versions and device (JSON).")
@fail_cleanly
def main(params, train_data, validation_data, adapter_dir, live_dir, checkpoint_dir, run_info):
    config = load_config(params)
    check_runtime(config, processes=config.train.processes, training=True)
    # the model libraries (seconds of imports) only once the params are known to be good: a bad one ends at once
    from xsumtune.checkpoints import fingerprint
    from xsumtune.distributed import is_main, rank, world_size
    from xsumtune.io import read_parquet, write_json
    from xsumtune.model.loading import apply_lora, load_base_model
    from xsumtune.provenance import describe_run
    from xsumtune.data.tokenization import load_tokenizer
    from xsumtune.train.training import adapter_checksum, train_adapter

    tokenizer = load_tokenizer(config.model.tokenizer, config.model.revision)
    model = load_base_model(config.model, config.seed)
    model = apply_lora(model, config.lora, config.seed, config.train.gradient_checkpointing)
    metrics = train_adapter(config, model, tokenizer, read_parquet(train_data), read_parquet(validation_data),
                            adapter_dir, live_dir, checkpoint_dir,
                            resume_key=fingerprint(Path(train_data), Path(validation_data)))
    if run_info and is_main():
        write_json(run_info, describe_run(config, model))
    click.echo(f"train: rank {rank()}/{world_size()} adapter {adapter_checksum(model)}; {metrics}")


if __name__ == "__main__":
    main()
