"""The pipeline's stages: Click commands run as `python -m stages.<name>`."""
import functools

import click

from xsumtune.config import ConfigError
from xsumtune.data import DataError


def fail_cleanly(command):
    """Turns the errors a user can fix into one clear line and exit code 1, not a traceback."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ConfigError, DataError, FileNotFoundError) as error:
            raise click.ClickException(str(error)) from None
    return wrapper
