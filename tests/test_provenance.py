"""The provenance record every stage writes: revisions, library versions, Python and the device."""
import platform
from importlib import metadata
from types import SimpleNamespace

import torch

from xsumtune import provenance
from xsumtune.config import Config, DataConfig, DownloadConfig, ModelConfig


def test_record_names_revisions_versions_python_and_device():
    config = Config(download=DownloadConfig(dataset="EdinburghNLP/xsum", revision="a" * 40),
                    data=DataConfig(source="data/hub"),
                    model=ModelConfig(name="microsoft/phi-2", revision="b" * 40, tokenizer="microsoft/phi-2"))
    model = SimpleNamespace(config=SimpleNamespace(_commit_hash="c" * 40))
    record = provenance.describe_run(config, model)
    assert record["data"] == {"source": "data/hub", "dataset": "EdinburghNLP/xsum", "revision": "a" * 40}
    assert record["tokenizer"] == {"name": "microsoft/phi-2", "revision": "b" * 40}
    assert record["model"] == {"name": "microsoft/phi-2", "revision": "b" * 40, "weights": "pretrained",
                               "loaded_commit": "c" * 40}
    assert record["libraries"]["transformers"] == metadata.version("transformers")
    assert record["python"] == platform.python_version()
    assert record["device"]["type"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_preprocess_has_no_model_and_a_missing_library_is_null(monkeypatch):
    monkeypatch.setattr(provenance, "LIBRARIES", ("torch", "no-such-distribution"))
    record = provenance.describe_run(Config())
    assert "model" not in record
    assert record["libraries"] == {"torch": metadata.version("torch"), "no-such-distribution": None}


def test_no_download_records_no_revision():
    config = Config(download=DownloadConfig(dataset=None, revision="refs/convert/parquet"))
    assert provenance.describe_run(config)["data"] == {"source": "data/sample", "dataset": None, "revision": None}
