"""The same bits from the same inputs: the stages pin the CPU kernels, and a fresh copy's `dvc repro` of the
default profile gives the committed outputs (the adapter on the processor that made dvc.lock)."""
import json
import os
import subprocess
import sys
import tempfile

import pytest
import yaml

from conftest import AVX2, ROOT, processor

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


def train_tiny(*envs: dict) -> list[tuple[str, str]]:
    """(the CPU kernel set torch used, the adapter's checksum) of a few training steps in a new process, one
    process for each environment's changes, all at once (each mostly imports, on one core)."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")}
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    with tempfile.TemporaryDirectory() as logs:
        processes = []
        try:
            for index, env in enumerate(envs):  # output to files: a full pipe would stall a process
                out, err = open(f"{logs}/{index}.out", "w+"), open(f"{logs}/{index}.err", "w+")
                processes.append((subprocess.Popen([sys.executable, "-c", TRAIN_TINY], cwd=ROOT, env=environment | env,
                                                   stdout=out, stderr=err, text=True), out, err))
            results = []
            for process, out, err in processes:
                process.wait(timeout=300)
                out.seek(0), err.seek(0)
                assert process.returncode == 0, err.read()[-3000:]
                capability, checksum = out.read().split()[-2:]
                results.append((capability, checksum))
            return results
        finally:
            for process, out, err in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                out.close(), err.close()


@pytest.mark.skipif(not AVX2, reason="the pins name x86-64's AVX2")
def test_stages_pin_the_cpu_kernels_and_the_kernels_decide_the_bits():
    pinned, default_kernels, compatible_mkl = train_tiny({}, {"ATEN_CPU_CAPABILITY": "default"},
                                                         {"MKL_CBWR": "COMPATIBLE"})
    assert pinned[0] == "AVX2"
    # the same bits twice: test_fresh_copy_reproduces_the_committed_lock_through_training (the default
    # profile's adapter, trained again in a fresh copy, is the committed one)
    # Other kernels for the same arithmetic (what a processor with AVX-512, or without AVX2, would pick)
    # give other bits: why the stages pin them.
    assert default_kernels[1] != pinned[1]
    assert compatible_mkl[1] != pinned[1]


LOCK_PROCESSOR = json.loads((ROOT / "tests" / "lock_processor.json").read_text())


def committed_and_fresh_outs(fresh_repo, stage: str) -> tuple[dict, dict]:
    committed = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"][stage]["outs"]
    fresh = yaml.safe_load((fresh_repo / "dvc.lock").read_text())["stages"][stage]["outs"]
    return ({out["path"]: out.get("md5") for out in committed}, {out["path"]: out.get("md5") for out in fresh})


@pytest.mark.slow
@pytest.mark.skipif(not AVX2, reason="dvc.lock was made with the AVX2 kernels")
def test_fresh_copy_reproduces_the_committed_base_model_and_data(smol_trained):
    """The default profile's base model and processed data are the committed ones, byte for byte (dvc.lock's
    md5s), on any machine. conftest's smol_trained is a fresh copy's `dvc repro train`, run beside the other
    tests; its base model is the base_model stage's output of this session (conftest's base_dir, on the same
    params), committed in place with the hash it has."""
    for stage in ("base_model", "preprocess"):
        committed, fresh = committed_and_fresh_outs(smol_trained, stage)
        assert fresh == committed, stage


@pytest.mark.slow
@pytest.mark.skipif(processor() != LOCK_PROCESSOR["processor"],
                    reason=f"dvc.lock's adapter was trained on {LOCK_PROCESSOR['processor']}; this is {processor()}, "
                           "whose kernels can round otherwise even with the pins (seen once)")
def test_fresh_copy_reproduces_the_committed_adapter_on_the_processor_that_made_it(smol_trained):
    """On the processor that made dvc.lock (tests/lock_processor.json), a fresh copy's training gives the
    committed adapter and training metrics byte for byte: nothing in the code, the data or the pins leaves
    the result to chance."""
    committed, fresh = committed_and_fresh_outs(smol_trained, "train")
    assert fresh == committed


def test_the_lock_processor_file_is_this_module_s_description_of_a_processor():
    """tests/lock_processor.json says what processor() says: a key renamed in one place and not the other
    would make the comparison above skip everywhere."""
    assert set(LOCK_PROCESSOR["processor"]) == set(processor())
