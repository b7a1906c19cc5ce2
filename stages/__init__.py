"""The pipeline's stages: Click commands run as `python -m stages.<name>`."""
import functools
import os
import platform
from pathlib import Path

# PyTorch and MKL pick their CPU kernels by the instructions the processor has (AVX-512 where there is
# one), and each kernel rounds in its own order, so an adapter trained on another processor differs in its
# last bits. Pinned to AVX2 before torch is loaded, which leaves fewer such differences, not none (README,
# Reliability); set any of these in the environment to choose otherwise.
if platform.machine().lower() in ("x86_64", "amd64"):
    for _name, _value in (("ATEN_CPU_CAPABILITY", "avx2"), ("MKL_CBWR", "AVX2"), ("ONEDNN_MAX_CPU_ISA", "AVX2")):
        os.environ.setdefault(_name, _value)

import click

from xsumtune.config import ConfigError
from xsumtune.data.sources import DataError

OUT_OF_MEMORY_HELP = (
    "out of GPU memory in {stage}. Lower what the step holds, for example: train.batch_size (raise "
    "train.grad_accum to keep the effective batch), prompt.max_seq_len, train.gradient_checkpointing: true, "
    "model.quantization: nf4; for generation generate.token_budget or generate.batch_size. Nothing was written."
)
# Set by stages.launch for several processes: each rank leaves its message there, and the launcher prints
# the first failed rank's once, after torchrun has finished, instead of every rank printing its own.
ERROR_DIR = "XSUMTUNE_ERROR_DIR"


def fail_cleanly(command):
    """Turns the errors a user can fix into one clear message and exit code 1, not a traceback.

    Outputs are written to temporary paths and renamed at the end, so a failure leaves none behind."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ConfigError, DataError, FileNotFoundError) as error:
            message = str(error)
        except Exception as error:
            if not _out_of_memory(error):
                raise
            message = OUT_OF_MEMORY_HELP.format(stage=command.__module__) + f" ({str(error).splitlines()[0]})"
        if os.environ.get(ERROR_DIR):
            (Path(os.environ[ERROR_DIR]) / f"rank-{os.environ.get('RANK', 0)}").write_text(message, encoding="utf-8")
            raise click.exceptions.Exit(1)
        raise click.ClickException(message)
    return wrapper


def _out_of_memory(error: Exception) -> bool:
    """torch's out-of-memory error; a stage that never imported torch can't have raised it (so none is imported)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(error, torch.OutOfMemoryError)
