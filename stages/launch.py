"""Runs a stage in this process, or in several through torchrun; either way a failure ends with its one line.

    python -m stages.launch --processes N stages.train --train-data ...

torchrun follows a failed process with its own traceback and error box, which push the stage's message
out of sight; here the launcher catches the failure and prints the first failed rank's message last."""
import logging
import os
import runpy
import sys
import tempfile
from pathlib import Path

import click

from stages import ERROR_DIR


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes (one a GPU); 1 runs the stage here, without torchrun.")
@click.argument("module")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def main(processes, module, args):
    if processes == 1:
        sys.argv = [module, *args]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        sys.exit(launch(processes, module, list(args)))


def launch(processes: int, module: str, args: list[str]) -> int:
    """torchrun --standalone in this process; a failure becomes one line on stderr and exit code 1."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    for name in list(logging.root.manager.loggerDict):  # torchrun's agent logs each failure as a wall of text
        if name.startswith("torch.distributed.elastic") or name == torchrun.__name__:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    # torchrun sets 1 thread a process, with a warning, when this is unset; share the cores out instead
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // processes)))
    with tempfile.TemporaryDirectory(prefix="xsumtune-errors-") as errors:
        os.environ[ERROR_DIR] = errors  # each rank leaves its one-line message here (stages.fail_cleanly)
        try:
            torchrun.run(torchrun.parse_args(["--standalone", "--nproc_per_node", str(processes),
                                              "-m", module, *args]))
        except ChildFailedError as failure:
            click.echo(f"Error: {failure_message(failure, Path(errors), module)}", err=True)
            return 1
    return 0


def failure_message(failure, errors: Path, module: str) -> str:
    """The message of the rank that failed first; else any rank's; else how the first one ended."""
    rank, first = failure.get_first_failure()
    left = sorted(errors.glob("rank-*"), key=lambda path: int(path.name.split("-")[1]))
    for path in [errors / f"rank-{rank}", *left]:
        if path.exists():
            return path.read_text(encoding="utf-8")
    ended = f"was killed by {first.signal_name()}" if first.exitcode < 0 else f"exited with {first.exitcode}"
    return f"{module}: rank {rank} {ended} (its output above says why)"


if __name__ == "__main__":
    main()
