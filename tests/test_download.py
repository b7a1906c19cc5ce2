"""The download stage: a dataset snapshotted into local parquet files that preprocess reads; with the hub out of
reach it stops at once with one line; the phi2 profile gets past DVC's dependency check."""
import json
import os
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import ROOT, tiny, tiny_params
from repo_copy import clean_env, copy_repo, dvc
from xsumtune.data.sources import Report, load_split
from xsumtune.data.download import SOURCE_FILE, download_dataset

# A closed port on this machine: the hub refuses at once, whether or not the machine has a network.
HUB_DOWN = {"HF_ENDPOINT": "http://127.0.0.1:9"}
SIZES = {"train": 12, "validation": 6, "test": 8}


def hub_layout(directory):
    """A dataset directory as the hub stores XSum (data/<split>-00000-of-00001.parquet), from sample rows."""
    rows = [{**row, "id": str(row["id"])}  # string ids, as the hub's XSum has them
            for row in map(json.loads, (ROOT / "data" / "sample" / "test.jsonl").read_text().splitlines())]
    (directory / "data").mkdir(parents=True)
    start, splits = 0, {}
    for split, size in SIZES.items():
        splits[split] = rows[start:start + size]
        start += size
        pq.write_table(pa.Table.from_pylist(splits[split]), directory / "data" / f"{split}-00000-of-00001.parquet")
    return directory, splits


def run_stage(tmp_path, dataset, env=()):
    params = tiny_params()
    params["download"]["dataset"] = dataset
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "stages.download", "--params", str(tmp_path / "params.yaml"),
                             "--out-dir", str(tmp_path / "hub")], cwd=ROOT, capture_output=True, text=True,
                            env=os.environ | {"HF_HOME": str(tmp_path / "hf-home"), **dict(env)})
    return result, time.monotonic() - started


def test_a_dataset_directory_is_snapshotted_into_files_preprocess_reads(tmp_path):
    source, splits = hub_layout(tmp_path / "xsum")
    result, _ = run_stage(tmp_path, str(source))
    assert result.returncode == 0, result.stderr
    for split, rows in splits.items():
        loaded = load_split(str(tmp_path / "hub"), split, "error", Report())
        assert [row["id"] for row in loaded] == [row["id"] for row in rows]
    record = json.loads((tmp_path / "hub" / SOURCE_FILE).read_text())
    assert record["dataset"] == str(source) and record["rows"] == SIZES
    assert record["revision"] is None and "no revision" in record["revision_note"]


def test_no_dataset_writes_only_a_marker(tmp_path):
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "test.parquet").write_text("an earlier snapshot")
    download_dataset(tiny("download", dataset=None), tmp_path / "hub")
    assert [p.name for p in (tmp_path / "hub").iterdir()] == [SOURCE_FILE]
    assert json.loads((tmp_path / "hub" / SOURCE_FILE).read_text())["dataset"] is None


def test_an_unreachable_hub_stops_at_once_with_one_line(tmp_path):
    result, seconds = run_stage(tmp_path, "EdinburghNLP/xsum", HUB_DOWN)
    lines = result.stderr.strip().splitlines()
    # datasets.load_dataset alone retries a refused connection for ~24 s, logging each retry (measured)
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "download.dataset: cannot download EdinburghNLP/xsum" in lines[0] and "data.source: <local dir>" in lines[0]
    assert not (tmp_path / "hub").exists()
    assert seconds < 60  # the imports, under load; no retries


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("download") / "repo")


def test_the_phi2_profile_passes_dvcs_dependency_check_and_stops_in_one_line(repo, tmp_path):
    env = clean_env(**HUB_DOWN, HF_HOME=str(tmp_path / "hf-home"))
    result = dvc("exp", "run", "-S", "profile=phi2", cwd=repo, check=False, env=env, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output
    assert f"{repo}/EdinburghNLP" not in output and "No such file or directory" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    # the first stage to need the hub stops with its own line; DVC's one-line summary names the stage
    assert lines[-1].startswith("ERROR: failed to reproduce '"), lines[-1]
    assert lines[-2].startswith(("Error: base.name: cannot download microsoft/phi-2",
                                 "Error: download.dataset: cannot download EdinburghNLP/xsum")), lines[-2]


def test_dvc_runs_download_then_preprocess_on_the_snapshot(repo, tmp_path):
    source, splits = hub_layout(tmp_path / "xsum")
    params = tiny_params()
    params["download"].update(dataset=str(source), revision=None)  # a local directory has no revision
    params["data"].update(source="data/hub", train_split="train", train_size=None, validation_size=None,
                          test_size=None)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc("repro", "preprocess", cwd=repo, env=clean_env(HF_HOME=str(tmp_path / "hf-home")), timeout=300)
    stats = json.loads((repo / "metrics" / "preprocess.json").read_text())
    assert stats["test"]["examples"] == SIZES["test"]  # every test article, whatever its reference
    record = json.loads((repo / "metrics" / "run" / "preprocess.json").read_text())
    assert record["data"] == {"source": "data/hub", "dataset": str(source), "revision": None}
    status = json.loads(dvc("status", "--json", "preprocess", cwd=repo).stdout)
    assert status == {}
