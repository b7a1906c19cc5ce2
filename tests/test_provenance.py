"""The provenance record every stage writes: revisions, library versions, Python and the device."""
import platform
from importlib import metadata
from types import SimpleNamespace

import torch

from xsumtune import provenance
from conftest import tiny, tiny_config


def test_record_names_revisions_versions_python_and_device():
    config = tiny_config(download=tiny("download", dataset="EdinburghNLP/xsum", revision="a" * 40),
                         data=tiny("data", source="data/hub"),
                         model=tiny("model", name="microsoft/phi-2", revision="b" * 40, tokenizer="microsoft/phi-2",
                                    weights="pretrained"))
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
    record = provenance.describe_run(tiny_config())
    assert "model" not in record
    assert record["libraries"] == {"torch": metadata.version("torch"), "no-such-distribution": None}


def test_no_download_records_no_revision():
    config = tiny_config(download=tiny("download", dataset=None, revision="refs/convert/parquet"))
    assert provenance.describe_run(config)["data"] == {"source": "data/sample", "dataset": None, "revision": None}
