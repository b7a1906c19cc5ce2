"""How much do the scores move with the training seed alone? ROUGE's spread over experiments.

    dvc exp run --queue -S 'seed=1,2,3'            # on fixed data: data.seed picks the subsets
    dvc queue start -j 1
    python -m stages.seeds                        # every experiment `dvc exp show` lists
    python -m stages.seeds --exps <name> <name>...

Prints one JSON object: the experiments, their seeds, per ROUGE key the mean, sample standard deviation,
min and max, and the params other than seed in which the experiments differ (then it is not seed variance).
"""
import json
import subprocess
import sys

import click

from xsumtune.report.seeds import experiments_from_show, spread


@click.command()
@click.option("--exps", multiple=True, help="Experiment names (repeatable); default: every one with metrics.")
@click.option("--show-json", type=click.Path(exists=True, dir_okay=False),
              help="A saved `dvc exp show --json`; default: run it here.")
@click.argument("names", nargs=-1)
def main(exps, show_json, names):
    if show_json:
        with open(show_json, encoding="utf-8") as handle:
            shown = json.load(handle)
    else:
        result = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], capture_output=True, text=True)
        if result.returncode != 0:
            raise click.ClickException(f"dvc exp show --json failed: {result.stderr.strip().splitlines()[-1:]}")
        shown = json.loads(result.stdout)
    try:
        click.echo(json.dumps(spread(experiments_from_show(shown, [*exps, *names]))))
    except ValueError as error:
        raise click.ClickException(str(error)) from None


if __name__ == "__main__":
    main()
