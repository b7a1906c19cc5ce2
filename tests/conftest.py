import functools
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = ROOT / "models" / "tokenizers" / "phi-2"
TINY_CONFIG_DIR = ROOT / "models" / "configs" / "tiny-phi"
SMOL_TOKENIZER_DIR = ROOT / "models" / "tokenizers" / "smollm2"


def compose_params(path: Path, profile: str = "tiny", overrides=()) -> Path:
    """params.yaml for a profile, composed from conf/ as `dvc exp run -S profile=...` does."""
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(path, str(ROOT / "conf"), None, "config", str(ROOT / "conf"),
                     [f"profile={profile}", *overrides])
    return path


@functools.cache
def _tiny_params_text() -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return compose_params(Path(tmp) / "params.yaml").read_text()


def tiny_params() -> dict:
    """The tiny profile's params (a fresh dict each call): a random-weight model, seconds on a CPU."""
    return yaml.safe_load(_tiny_params_text())


def tiny_config(**sections):
    """The tiny profile's typed config, with whole sections replaced; the dataclasses carry no defaults, so
    tests start from a profile."""
    import dataclasses

    return dataclasses.replace(_tiny_config(), **sections)


@functools.cache
def _tiny_config():
    import tempfile

    from xsumtune.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(_tiny_params_text())
        return load_config(path)


def tiny(section: str, **changes):
    """One section of the tiny profile's config, with changes: tiny("score", bootstrap_resamples=50)."""
    import dataclasses

    return dataclasses.replace(getattr(_tiny_config(), section), **changes)


@pytest.fixture(scope="session")
def tokenizer():
    from xsumtune.data.tokenization import load_tokenizer

    return load_tokenizer(str(TOKENIZER_DIR))


@pytest.fixture
def tiny_model_config():
    return tiny("model", name=str(TINY_CONFIG_DIR), weights="random", tokenizer=str(TOKENIZER_DIR),
                dtype="float32", quantization="none")


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path
