import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = ROOT / "models" / "tokenizers" / "phi-2"
TINY_CONFIG_DIR = ROOT / "models" / "configs" / "tiny-phi"


@pytest.fixture(scope="session")
def tokenizer():
    from xsumtune.tokenization import load_tokenizer

    return load_tokenizer(str(TOKENIZER_DIR))


@pytest.fixture
def tiny_model_config():
    from xsumtune.config import ModelConfig

    return ModelConfig(name=str(TINY_CONFIG_DIR), weights="random", tokenizer=str(TOKENIZER_DIR),
                       dtype="float32", quantization="none")


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path
