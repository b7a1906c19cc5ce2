"""The same bits from the same inputs: the stages pin the CPU kernels, so dvc.lock is reproduced on
another machine, and a fresh copy's `dvc repro` of the default profile gives the committed outputs."""
import platform
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from repo_copy import copy_repo, dvc

X86 = platform.machine().lower() in ("x86_64", "amd64")
AVX2 = X86 and "avx2" in open("/proc/cpuinfo").read().split() if sys.platform == "linux" else False

TRAIN_TINY = """
import tempfile
import stages  # the kernel pins, before torch loads
import torch
from conftest import tiny, tiny_config
from xsumtune.data.tokenization import PromptEncoder, load_tokenizer
from xsumtune.model.loading import apply_lora, load_base_model
from xsumtune.train.training import adapter_checksum, train_adapter

model_config = tiny("model")
tokenizer = load_tokenizer(model_config.tokenizer)
config = tiny_config(train=tiny("train", epochs=1, batch_size=2, grad_accum=1, lr=1.0e-2, warmup_steps=0,
                                logging_steps=1, save_steps=4, optimizer="adamw_torch"))
encoder = PromptEncoder(tokenizer, "direct")
rows = [encoder.encode("The council voted to close the library. " * (i + 1), "A library is to close.", 256)
        for i in range(8)]
model = apply_lora(load_base_model(model_config, 0), config.lora, 0)
with tempfile.TemporaryDirectory() as tmp:
    train_adapter(config, model, tokenizer, rows, rows[:2], tmp + "/adapter", tmp + "/live", tmp + "/checkpoints")
print(torch.backends.cpu.get_cpu_capability(), adapter_checksum(model))
"""


def train_tiny(**env) -> tuple[str, str]:
    """(the CPU kernel set torch used, the adapter's checksum) of a few training steps in a new process."""
    import os

    environment = {k: v for k, v in os.environ.items()
                   if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")} | env
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    result = subprocess.run([sys.executable, "-c", TRAIN_TINY], cwd=ROOT, env=environment, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    capability, checksum = result.stdout.split()[-2:]
    return capability, checksum


@pytest.mark.skipif(not AVX2, reason="the pins name x86-64's AVX2")
def test_stages_pin_the_cpu_kernels_and_the_kernels_decide_the_bits():
    pinned = train_tiny()
    assert pinned[0] == "AVX2"
    # the same bits twice: test_fresh_copy_reproduces_the_committed_lock_through_training (the default
    # profile's adapter, trained again in a fresh copy, is the committed one)
    # Other kernels for the same arithmetic (what a processor with AVX-512, or without AVX2, would pick)
    # give other bits: why the stages pin them.
    assert train_tiny(ATEN_CPU_CAPABILITY="default")[1] != pinned[1]
    assert train_tiny(MKL_CBWR="COMPATIBLE")[1] != pinned[1]


@pytest.mark.slow
@pytest.mark.skipif(not AVX2, reason="dvc.lock was made with the AVX2 kernels")
def test_fresh_copy_reproduces_the_committed_lock_through_training(tmp_path, base_dir):
    """The default profile's base model, processed data and adapter are the committed ones, byte for byte
    (dvc.lock's md5s): the stages up to train, which is where machines used to differ. The base model is
    the base_model stage's output of this session (conftest's base_dir, on the same params), committed in
    place with the hash it has; preprocess and train run here."""
    import shutil

    committed = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    repo = copy_repo(tmp_path / "repo", profile="smol-cpu")
    shutil.copytree(base_dir, repo / "models" / "base")
    dvc("commit", "-f", "base_model", cwd=repo)  # into the cache; the lock takes its hash as it is
    dvc("repro", "train", cwd=repo, timeout=1200)
    fresh = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for stage in ("base_model", "preprocess", "train"):
        outs = {out["path"]: out.get("md5") for out in fresh[stage]["outs"]}
        assert outs == {out["path"]: out.get("md5") for out in committed[stage]["outs"]}, stage
