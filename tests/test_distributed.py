"""Several processes on the CPU (gloo): the same adapter on every rank, predictions gathered in order."""
import concurrent.futures
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest
import yaml

from conftest import ROOT, SMALL_SPLITS, tiny_params
from repo_copy import run
from xsumtune.distributed import gather_in_order

LAUNCH = [sys.executable, "-m", "stages.launch"]  # as dvc.yaml runs them: torchrun for several processes


@pytest.fixture(scope="module")
def work(tmp_path_factory, small_splits):
    work = tmp_path_factory.mktemp("distributed")
    params = tiny_params()
    for section, values in SMALL_SPLITS.items():  # the preprocess stage's splits of these: conftest's small_splits
        params[section].update(values)
    params["train"].update(epochs=1, batch_size=2, grad_accum=1, save_steps=4, logging_steps=2, warmup_steps=2)
    params["generate"].update(batch_size=2, max_new_tokens=12)
    for processes in (1, 2):
        params["train"]["processes"] = params["generate"]["processes"] = processes
        (work / f"params{processes}.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(small_splits, work / "data")
    return work


def train(work, processes):
    out = work / f"train{processes}"
    return run([*LAUNCH, "--processes", str(processes), "stages.train",
                "--params", work / f"params{processes}.yaml", "--train-data", work / "data" / "train.parquet",
                "--validation-data", work / "data" / "validation.parquet", "--adapter-dir", out / "adapter",
                "--live-dir", out / "live", "--checkpoint-dir", out / "checkpoints"], ROOT)


def evaluate(work, processes, adapter):
    """The generate stage in `processes` processes, then the score stage on what it gathered."""
    out = work / f"evaluate{processes}"
    run([*LAUNCH, "--processes", str(processes), "stages.generate",
         "--params", work / f"params{processes}.yaml", "--test-data", work / "data" / "test.parquet",
         "--adapter-dir", adapter, "--generations", out / "generations", "--progress-dir", out / "progress"], ROOT)
    run([sys.executable, "-m", "stages.score_systems", "--params", work / f"params{processes}.yaml",
         "--test-data", work / "data" / "test.parquet", "--generations", out / "generations",
         "--headline", out / "headline.json", "--metrics", out / "metrics.json", "--predictions",
         out / "predictions.jsonl", "--rouge-plot", out / "rouge.json", "--length-plot", out / "lengths.json"], ROOT)
    return out


@pytest.fixture(scope="module")
def trained(work):
    """The train stage in two processes (torchrun, gloo); its adapter is also the one the sharded evaluation
    generates with (any trained adapter would do there: the test compares one process against two)."""
    return train(work, 2)


@pytest.mark.slow
def test_two_processes_end_with_the_same_adapter_and_write_once(work, trained):
    result = trained
    # both ranks write to one pipe: a rank's line can land after the other's unfinished output on a line
    found = re.findall(r"train: rank (\d+/\d+) adapter (\w+);", result.stdout)
    assert sorted(rank for rank, _ in found) == ["0/2", "1/2"]
    checksums = {checksum for _, checksum in found}
    assert len(checksums) == 1  # DDP kept every rank's adapter identical
    metrics = json.loads((work / "train2" / "live" / "metrics.json").read_text())
    assert metrics["train_steps"] == 24 // (2 * 2)  # global batch = batch 2 x accumulation 1 x 2 processes
    assert (work / "train2" / "adapter" / "adapter_model.safetensors").exists()
    assert list((work / "train2" / "checkpoints").iterdir()) == []


@pytest.mark.slow
def test_sharded_evaluation_gathers_every_article_in_order(work, trained):
    adapter = work / "train2" / "adapter"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # independent: both at once
        one, two = pool.map(lambda processes: evaluate(work, processes, adapter), (1, 2))
    ids = [json.loads(line)["id"] for line in (two / "predictions.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 6
    assert (two / "predictions.jsonl").read_bytes() == (one / "predictions.jsonl").read_bytes()
    assert json.loads((two / "metrics.json").read_text()) == json.loads((one / "metrics.json").read_text())


@pytest.mark.slow
def test_launching_another_count_of_processes_is_refused(work):
    result = subprocess.run([sys.executable, "-m", "stages.train", "--params", str(work / "params2.yaml"),
                             "--train-data", "x", "--validation-data", "x", "--adapter-dir", "a", "--live-dir", "l",
                             "--checkpoint-dir", "c"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and "ask for 2 processes but 1 were launched" in result.stderr


@dataclass
class Result:
    id: str


def test_gather_restores_order_and_refuses_gaps_and_duplicates():
    items = [{"id": i} for i in "abcd"]
    assert [r.id for r in gather_in_order(items, [Result("c"), Result("a"), Result("d"), Result("b")])] == list("abcd")
    with pytest.raises(RuntimeError, match="missing"):
        gather_in_order(items, [Result("a"), Result("b"), Result("c")])
    with pytest.raises(RuntimeError, match="twice"):
        gather_in_order(items, [Result("a"), Result("a"), Result("b"), Result("c"), Result("d")])
