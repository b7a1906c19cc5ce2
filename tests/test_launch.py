"""A failing train or generate stage ends with its own one-line error: under `dvc repro`, and with several
processes under torchrun, whose traceback and error box the launcher keeps out."""
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, tiny_params
from repo_copy import copy_repo

pytestmark = pytest.mark.slow  # each test starts stage processes


def output_lines(args, cwd) -> tuple[int, list[str]]:
    """Exit code and the non-empty lines of stdout and stderr together, in the order they were printed."""
    result = subprocess.run(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    return result.returncode, [line for line in result.stdout.splitlines() if line.strip()]


def test_failing_stage_under_dvc_repro_ends_with_its_line_then_dvcs(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["lr"] = -1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # train checks its params before it reads anything, so its inputs need only exist; `-s` runs train
    # alone, since base_model and preprocess check the same params and would fail first
    for name in ("train.parquet", "validation.parquet"):
        (repo / "data" / "processed").mkdir(parents=True, exist_ok=True)
        (repo / "data" / "processed" / name).touch()
    (repo / "models" / "base").mkdir(parents=True, exist_ok=True)
    code, lines = output_lines([sys.executable, "-m", "dvc", "repro", "-s", "train"], repo)
    assert code != 0
    assert lines[-1].startswith("ERROR: failed to reproduce 'train': failed to run: ")  # DVC's own, always last
    assert lines[-2].startswith("Error: params.yaml: train.lr: must be > 0"), lines
    assert not any("Traceback" in line or "ChildFailedError" in line for line in lines), lines


def test_a_bad_value_on_dvc_exp_run_ends_with_the_line_naming_its_key(tmp_path):
    """The composed params are checked before DVC stashes or runs anything (conf/hydra_plugins)."""
    repo = copy_repo(tmp_path / "repo")
    code, lines = output_lines([sys.executable, "-m", "dvc", "exp", "run", "-S", "train.lr=-1"], repo)
    assert code != 0
    assert lines[-1] == "Error: params.yaml: train.lr: must be > 0, got -1.0", lines
    assert not any("Running stage" in line or "Traceback" in line for line in lines), lines
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    assert status == ""  # params.yaml as it was, nothing else touched


def test_several_processes_print_the_first_ranks_line_once_and_last(tmp_path):
    params = tiny_params()
    params["train"].update(lr=-1, processes=2)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    code, lines = output_lines([sys.executable, "-m", "stages.launch", "--processes", "2", "stages.train",
                                "--params", path, "--train-data", "x", "--validation-data", "x", "--adapter-dir", "a",
                                "--live-dir", "l", "--checkpoint-dir", "c"], ROOT)
    assert code == 1
    assert lines == [f"Error: {path}: train.lr: must be > 0, got -1.0"]  # no torchrun box, no thread warning


def test_a_crash_without_a_message_ends_with_the_rank_and_its_exit_code():
    code, lines = output_lines([sys.executable, "-m", "stages.launch", "--processes", "2", "stages.no_such_stage"],
                               ROOT)
    assert code == 1
    assert "No module named stages.no_such_stage" in "\n".join(lines)  # the rank's own words stay
    assert lines[-1].startswith("Error: stages.no_such_stage: rank ")
    assert lines[-1].endswith(" exited with 1 (its output above says why)")
