"""Seed variance from `dvc exp show --json`: the spread of ROUGE over experiments that differ in seed alone."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, tiny_params
from xsumtune.report.seeds import experiments_from_show, spread


def shown(scores_by_seed: dict[int, float], lr=None) -> list[dict]:
    """`dvc exp show --json` as DVC 3 writes it: the workspace, then each baseline with its experiments."""
    revs = []
    for seed, rouge1 in scores_by_seed.items():
        params = tiny_params()
        params["seed"] = seed
        if lr:
            params["train"]["lr"] = lr[seed]
        revs.append({"experiments": None, "rev": f"{seed:040d}", "name": f"exp-{seed}", "data": {
            "params": {"params.yaml": {"data": params}},
            "metrics": {"metrics/headline.json": {"data": {"fine_tuned": {"rouge1": rouge1, "rouge2": rouge1 / 2,
                                                                          "rougeL": rouge1 - 1}}}}}})
    revs.append({"rev": "f" * 40, "name": "queued-one", "data": {"params": {}, "metrics": {}}})  # no metrics yet
    return [{"rev": "workspace", "name": None, "data": {}, "experiments": None},
            {"rev": "a" * 40, "name": "main", "data": {}, "experiments": [{"revs": [rev]} for rev in revs]}]


def seeds(tmp_path, show, *names):
    (tmp_path / "show.json").write_text(json.dumps(show))
    return subprocess.run([sys.executable, "-m", "stages.seeds", "--show-json", str(tmp_path / "show.json"), *names],
                          cwd=ROOT, capture_output=True, text=True)


def test_spread_over_three_seeds():
    result = spread(experiments_from_show(shown({1: 30.0, 2: 32.0, 3: 34.0})))
    assert result["experiments"] == ["exp-1", "exp-2", "exp-3"] and result["seeds"] == [1, 2, 3]
    assert result["rouge1"] == {"mean": 32.0, "std": 2.0, "min": 30.0, "max": 34.0}  # sample std of 30, 32, 34
    assert result["rouge2"]["std"] == 1.0 and result["rougeL"]["mean"] == 31.0
    assert result["differing_params"] == []


def test_named_experiments_and_other_differences_are_reported(tmp_path):
    show = shown({1: 30.0, 2: 32.0, 3: 34.0}, lr={1: 1.0e-3, 2: 1.0e-3, 3: 2.0e-3})
    result = json.loads(seeds(tmp_path, show, "--exps", "exp-1", "exp-3").stdout)
    assert result["experiments"] == ["exp-1", "exp-3"] and result["rouge1"]["mean"] == 32.0
    assert result["differing_params"] == ["train.lr"]  # then the spread is not the seed's alone


def test_an_unknown_experiment_is_one_line(tmp_path):
    result = seeds(tmp_path, shown({1: 30.0, 2: 32.0}), "--exps", "nope")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "Error: experiment 'nope': not in `dvc exp show` with metrics/headline.json (experiments there: "
        "['exp-1', 'exp-2'])"]


def test_one_experiment_has_no_spread():
    with pytest.raises(ValueError, match="1 experiment"):
        spread(experiments_from_show(shown({1: 30.0, 2: 32.0}), ["exp-1"]))
