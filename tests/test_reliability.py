"""Atomic outputs, out-of-memory reporting and checks made before any weights load."""
import json
import os
import stat

import click
import pytest
import torch

from conftest import tiny, tiny_config
from xsumtune.config import ConfigError
from xsumtune.model.runtime import check_runtime
from xsumtune.io import atomic_path, write_json


def test_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"rouge1": 1.0})
    with pytest.raises(TypeError):
        write_json(target, {"rouge1": object()})  # fails halfway through serialising
    assert json.loads(target.read_text()) == {"rouge1": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_path_creates_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.parquet") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["022", "027"])
def test_outputs_get_the_mode_a_plain_write_gives(tmp_path, umask):
    """Readable by the group and others as the umask allows (0644 under 022), not mkstemp's private 0600."""
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "metrics.json", {"rouge1": 1.0})
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == 0o666 & ~umask


def test_out_of_memory_names_the_params_to_change():
    from stages import fail_cleanly

    @fail_cleanly
    def stage():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(click.ClickException) as error:
        stage()
    message = error.value.message
    for param in ("train.batch_size", "prompt.max_seq_len", "train.gradient_checkpointing", "model.quantization",
                  "generate.token_budget"):
        assert param in message
    assert "Tried to allocate 2.00 GiB" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_nf4_without_cuda_fails_before_loading():
    with pytest.raises(ConfigError, match="model.quantization: nf4 needs a CUDA GPU"):
        check_runtime(tiny_config(model=tiny("model", name="models/configs/tiny-phi", quantization="nf4")))


def test_sequence_longer_than_the_model_context_fails_before_loading():
    from conftest import TINY_CONFIG_DIR

    config = tiny_config(model=tiny("model", name=str(TINY_CONFIG_DIR), weights="random", dtype="float32"),
                    prompt=tiny("prompt", max_seq_len=4096))
    with pytest.raises(ConfigError, match="prompt.max_seq_len: 4096 exceeds .* context of 2048 tokens"):
        check_runtime(config)
