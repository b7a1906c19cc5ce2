"""The pipeline's stages: Click commands run as `python -m stages.<name>`."""
import functools

import click
import torch

from xsumtune.config import ConfigError
from xsumtune.data import DataError

OUT_OF_MEMORY_HELP = (
    "out of GPU memory in {stage}. Lower what the step holds, for example: train.batch_size (raise "
    "train.grad_accum to keep the effective batch), prompt.max_seq_len, train.gradient_checkpointing: true, "
    "model.quantization: nf4; for evaluation evaluate.token_budget or evaluate.batch_size. Nothing was written."
)


def fail_cleanly(command):
    """Turns the errors a user can fix into one clear message and exit code 1, not a traceback.

    Outputs are written to temporary paths and renamed at the end, so a failure leaves none behind."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ConfigError, DataError, FileNotFoundError) as error:
            raise click.ClickException(str(error)) from None
        except torch.OutOfMemoryError as error:
            raise click.ClickException(OUT_OF_MEMORY_HELP.format(stage=command.__module__) +
                                       f" ({str(error).splitlines()[0]})") from None
    return wrapper
