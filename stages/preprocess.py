"""Stage 1: XSum (local files: the sample or the download stage's snapshot) → cleaned, subset, tokenized
splits and their statistics."""
import click

from stages import fail_cleanly
from xsumtune.config import load_config
from xsumtune.io import write_json, write_parquet
from xsumtune.data.preprocessing import load_sources, prepare_splits
from xsumtune.provenance import describe_run
from xsumtune.data.tokenization import load_tokenizer


@click.command()
@click.option("--params", default="params.yaml", show_default=True)
@click.option("--out-dir", required=True, help="Directory for train/validation/test .parquet files.")
@click.option("--stats", required=True, help="Statistics metrics file (JSON).")
@click.option("--run-info", help="Where to record the revisions, library versions and device (JSON).")
@fail_cleanly
def main(params, out_dir, stats, run_info):
    config = load_config(params)
    sources = load_sources(config)  # a bad file stops here, before the tokenizer's libraries load (seconds)
    tokenizer = load_tokenizer(config.model.tokenizer, config.model.revision)
    splits, statistics = prepare_splits(config, tokenizer, sources)
    for name, rows in splits.items():
        write_parquet(f"{out_dir}/{name}.parquet", rows)
    write_json(stats, statistics)
    if run_info:
        write_json(run_info, describe_run(config))
    click.echo(f"preprocess: {', '.join(f'{n} {len(r)}' for n, r in splits.items())}; "
               f"dropped {statistics['dropped']}")


if __name__ == "__main__":
    main()
