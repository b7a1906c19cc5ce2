"""Stage 0: the hub dataset (download.dataset) as local parquet files at a pinned revision, fetched once."""
import click

from stages import fail_cleanly
from xsumtune.config import load_config
from xsumtune.data.download import download_dataset


@click.command()
@click.option("--params", default="params.yaml", show_default=True)
@click.option("--out-dir", required=True, help="Where <split>.parquet and SOURCE.json go.")
@fail_cleanly
def main(params, out_dir):
    config = load_config(params)
    record = download_dataset(config.download, out_dir)
    if record["dataset"] is None:
        click.echo(f"download: nothing to fetch (download.dataset is null); {out_dir}/SOURCE.json says so")
    else:
        click.echo(f"download: {record['dataset']} at revision {record['revision'] or record['revision_note']} "
                   f"into {out_dir}: " + ", ".join(f"{split} {rows}" for split, rows in record["rows"].items()))


if __name__ == "__main__":
    main()
