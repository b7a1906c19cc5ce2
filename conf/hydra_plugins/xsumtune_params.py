"""Checks the params that Hydra composes on `dvc exp run` before DVC stashes, writes or runs anything.

DVC loads Hydra plugins from `plugins_path` (conf/, set in .dvc/config) before it composes params.yaml;
importing this module registers the `xsumtune.validate` resolver, and conf/config.yaml's `validated` key
calls it once the whole config is composed. A bad value stops `dvc exp run -S train.lr=-1` in about two
seconds with the stages' own line (`Error: params.yaml: train.lr: must be > 0, got -1.0`) as the last
thing printed, and leaves params.yaml as it was.
"""
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

_REPO = Path(__file__).resolve().parents[2]
KEY = "validated"


def validate(*, _root_: DictConfig) -> bool:
    if str(_REPO) not in sys.path:
        sys.path.insert(0, str(_REPO))
    from xsumtune.config import ConfigError, config_from_mapping

    others = OmegaConf.masked_copy(_root_, [key for key in _root_ if key != KEY])
    raw = OmegaConf.to_container(others, resolve=True)
    raw[KEY] = True
    try:
        config_from_mapping(raw, "params.yaml")
    except ConfigError as error:
        # SystemExit, not an exception: OmegaConf would wrap an exception and DVC would end with its own
        # "unexpected error" lines; this way the line naming the key is the last one on screen
        raise SystemExit(f"Error: {error}") from None
    return True


OmegaConf.register_new_resolver("xsumtune.validate", validate, replace=True)
