"""Reliability: a killed train or generate resumes to the same result; reruns are byte-identical."""
import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT, SMALL_SPLITS, tiny_params
from repo_copy import run, run_together

pytestmark = pytest.mark.slow  # stages run, killed and resumed in subprocesses

SMALL = {
    **SMALL_SPLITS,  # the data and prompt of conftest's small_splits
    "train": {"epochs": 2, "batch_size": 2, "grad_accum": 1, "save_steps": 4, "logging_steps": 2, "warmup_steps": 2},
    "generate": {"batch_size": 2, "max_new_tokens": 12},
}


def stage(name, *args, cwd=ROOT):
    return [sys.executable, "-m", f"stages.{name}", *map(str, args)]


@pytest.fixture(scope="module")
def work(tmp_path_factory, small_splits):
    """Small params and preprocessed splits (the preprocess stage's, on the same data and prompt: conftest's
    small_splits), shared by the tests here."""
    work = tmp_path_factory.mktemp("resume")
    params = tiny_params()
    for section, values in SMALL.items():
        params[section].update(values)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(small_splits, work / "data")
    return work


def train_command(work, name):
    out = work / name
    return stage("train", "--params", work / "params.yaml", "--train-data", work / "data" / "train.parquet",
                 "--validation-data", work / "data" / "validation.parquet", "--adapter-dir", out / "adapter",
                 "--live-dir", out / "live", "--checkpoint-dir", out / "checkpoints")


def generate_command(work, name, adapter):
    out = work / name
    return stage("generate", "--params", work / "params.yaml", "--test-data", work / "data" / "test.parquet",
                 "--adapter-dir", adapter, "--generations", out / "generations", "--progress-dir", out / "progress")


def score_command(work, name):
    out = work / name
    return stage("score_systems", "--params", work / "params.yaml", "--test-data", work / "data" / "test.parquet",
                 "--generations", out / "generations", "--headline", out / "headline.json", "--metrics",
                 out / "metrics.json", "--predictions", out / "predictions.jsonl", "--rouge-plot", out / "rouge.json",
                 "--length-plot", out / "lengths.json")


def kill_when(command, ready, timeout=240):
    """Starts command, SIGKILLs it once ready() is true; returns whether it was killed mid-run."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if ready():
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                return True
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return False


def stale_checkpoints(work, name):
    """A checkpoint directory left by a run of other params (another fingerprint)."""
    (work / name / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    (work / name / "checkpoints" / "fingerprint.json").write_text('{"fingerprint": "another run"}')


@pytest.fixture(scope="module")
def trained(work):
    """Two uninterrupted runs of the same training; beside them, the same training over the checkpoints of
    other params (test_checkpoints_of_other_params_are_not_resumed): all three at once, each its own process."""
    stale_checkpoints(work, "other")
    results = run_together([train_command(work, name) for name in ("first", "second", "other")], ROOT)
    return work, results[2]


def test_two_runs_give_identical_adapter_bytes_and_metrics(trained):
    first, second = trained[0] / "first", trained[0] / "second"
    for name in ("adapter_model.safetensors", "adapter_config.json"):  # separate processes, other hash seeds
        assert (first / "adapter" / name).read_bytes() == (second / "adapter" / name).read_bytes()
    assert (first / "live" / "metrics.json").read_text() == (second / "live" / "metrics.json").read_text()
    assert list((first / "checkpoints").iterdir()) == []  # a finished run leaves no checkpoint behind


def test_killed_training_resumes_to_the_same_result(trained):
    work, _ = trained
    checkpoints = work / "killed" / "checkpoints"
    killed = kill_when(train_command(work, "killed"),
                       lambda: any((c / "trainer_state.json").exists() for c in checkpoints.glob("checkpoint-*")))
    assert killed, "training finished before a checkpoint was written"
    assert not (work / "killed" / "adapter").exists() and not (work / "killed" / "live").exists()  # nothing half-written
    resumed = run(train_command(work, "killed"), ROOT)
    assert "resuming from" in resumed.stdout
    assert (work / "killed" / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (work / "first" / "adapter" / "adapter_model.safetensors").read_bytes()
    assert json.loads((work / "killed" / "live" / "metrics.json").read_text()) == \
        json.loads((work / "first" / "live" / "metrics.json").read_text())
    loss_curve = (work / "killed" / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text()
    assert loss_curve == (work / "first" / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text()


def test_checkpoints_of_other_params_are_not_resumed(trained):
    work, result = trained  # the training over stale_checkpoints(work, "other")
    assert "resuming" not in result.stdout
    assert (work / "other" / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (work / "first" / "adapter" / "adapter_model.safetensors").read_bytes()


def test_killed_evaluation_resumes_without_duplicates_or_gaps(trained):
    work, _ = trained
    adapter = work / "first" / "adapter"
    log = work / "eval-killed" / "progress" / "generated.jsonl"
    with concurrent.futures.ThreadPoolExecutor(1) as beside:  # the uninterrupted run, at the same time
        whole = beside.submit(run, generate_command(work, "eval-whole", adapter), ROOT)
        killed = kill_when(generate_command(work, "eval-killed", adapter),
                           lambda: log.exists() and len(log.read_text().splitlines()) >= 4)
        assert killed, "generation finished before it was killed"
        assert not (work / "eval-killed" / "generations").exists()
        done_before = len(log.read_text().splitlines())
        run(generate_command(work, "eval-killed", adapter), ROOT)
        whole.result()
    run_together([score_command(work, name) for name in ("eval-whole", "eval-killed")], ROOT)
    whole = [json.loads(l) for l in (work / "eval-whole" / "predictions.jsonl").read_text().splitlines()]
    resumed = [json.loads(l) for l in (work / "eval-killed" / "predictions.jsonl").read_text().splitlines()]
    assert resumed == whole and len({r["id"] for r in resumed}) == len(resumed) == SMALL["data"]["test_size"]
    assert json.loads((work / "eval-killed" / "metrics.json").read_text()) == \
        json.loads((work / "eval-whole" / "metrics.json").read_text())
    assert done_before >= 4 and not log.exists()  # the progress log is dropped once the outputs are written
