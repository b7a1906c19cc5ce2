"""Remotes: push the pipeline's outputs, pull them into a fresh clone elsewhere, and find nothing to do.
The S3 remote is a real S3 server process (moto) on loopback, started and stopped here."""
import configparser
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT
from repo_copy import clean_env, commit, copy_tree, differing_files, dvc, git

OUTPUTS = ["data/processed", "models/adapter", "metrics/generations", "metrics/predictions.jsonl", "metrics/score.json",
           "metrics/headline.json", "metrics/train/metrics.json", "metrics/preprocess.json", "metrics/run"]
# DVC remote options that hold a secret (S3, Azure, GCS, SSH, HTTP, WebDAV, Google Drive, OSS).
SECRET_OPTIONS = ("access_key_id", "secret_access_key", "session_token", "password", "account_key",
                  "sas_token", "connection_string", "client_secret", "gdrive_client_secret", "token",
                  "oss_key_secret", "keyfile", "credentialpath")


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, reproduced_tiny):
    """A copy of the repository whose shrunk default pipeline has run and been committed."""
    return copy_tree(reproduced_tiny, tmp_path_factory.mktemp("remotes") / "repo")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def s3_server(tmp_path):
    """moto's standalone S3 server on 127.0.0.1, stopped whatever happens."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "moto.log").open("w") as log:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT, env=clean_env())
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(url, timeout=2).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(f"moto server did not start:\n{(tmp_path / 'moto.log').read_text()}")
                    time.sleep(0.3)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)


def assert_round_trip(repo, clone, env=None):
    """The clone pulled everything: nothing to do, and the outputs are byte-identical."""
    dvc("pull", cwd=clone, env=env)
    assert "Data and pipelines are up to date." in dvc("status", cwd=clone, env=env).stdout
    repro = dvc("repro", cwd=clone, env=env).stdout
    assert "Running stage" not in repro
    assert all(f"Stage '{stage}' didn't change" in repro for stage in ("preprocess", "train", "generate", "score"))
    assert differing_files(repo, clone, OUTPUTS) == []


@pytest.mark.slow
def test_local_directory_remote_round_trip(reproduced, tmp_path):
    storage = tmp_path / "storage"
    dvc("remote", "add", "-d", "-f", "local", storage, cwd=reproduced)
    commit(reproduced, "local remote")
    dvc("push", cwd=reproduced)
    assert any(path.is_file() for path in storage.rglob("*"))

    clone = tmp_path / "clone"
    git("clone", "-q", reproduced, clone, cwd=tmp_path)
    assert not (clone / "models" / "adapter").exists()
    assert_round_trip(reproduced, clone)


@pytest.mark.slow
def test_s3_remote_round_trip(reproduced, s3_server, tmp_path):
    import boto3

    key, secret = "test-access-key", "test-secret-key"
    # No credentials of this machine's user: only the ones given below.
    env = clean_env(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
                    AWS_DEFAULT_REGION="us-east-1", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    s3 = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id=key, aws_secret_access_key=secret,
                      region_name="us-east-1")
    s3.create_bucket(Bucket="xsum-dvc")

    dvc("remote", "add", "-d", "-f", "s3", "s3://xsum-dvc/cache", cwd=reproduced)
    dvc("remote", "modify", "s3", "endpointurl", s3_server, cwd=reproduced)
    commit(reproduced, "s3 remote")
    # This clone's credentials go to .dvc/config.local, which git ignores.
    dvc("remote", "modify", "--local", "s3", "access_key_id", key, cwd=reproduced)
    dvc("remote", "modify", "--local", "s3", "secret_access_key", secret, cwd=reproduced)
    dvc("push", cwd=reproduced, env=env, timeout=120)
    assert s3.list_objects_v2(Bucket="xsum-dvc", Prefix="cache/")["KeyCount"] > 0
    assert git("check-ignore", ".dvc/config.local", cwd=reproduced).stdout.strip() == ".dvc/config.local"
    assert_no_secret(git("show", "HEAD:.dvc/config", cwd=reproduced).stdout)
    assert secret in (reproduced / ".dvc" / "config.local").read_text()

    clone = tmp_path / "clone"
    git("clone", "-q", reproduced, clone, cwd=tmp_path)
    # The other clone's credentials come from the environment.
    assert_round_trip(reproduced, clone, env | {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret})


def assert_no_secret(config_text: str) -> None:
    parser = configparser.ConfigParser()
    parser.read_string(config_text)
    found = [f"{section}.{option}" for section in parser.sections() for option in parser[section]
             if option in SECRET_OPTIONS]
    assert found == [], f"secrets in a committed DVC config: {found}"


def test_committed_dvc_config_holds_no_secret():
    assert_no_secret((ROOT / ".dvc" / "config").read_text())
    assert "/config.local" in (ROOT / ".dvc" / ".gitignore").read_text().split()


def test_adapter_is_the_model_artifact_and_the_base_model_a_pushed_output():
    """The adapter is the model artifact; the base model is the base_model stage's output, pushed like data, so a
    clone with the remote needs no network. The base_model stage writes nothing else under models/."""
    import yaml

    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert pipeline["artifacts"]["adapter"]["path"] == "models/adapter"
    assert pipeline["artifacts"]["adapter"]["type"] == "model"
    outs = [next(iter(out)) if isinstance(out, dict) else out
            for stage in pipeline["stages"].values() for out in stage.get("outs", [])]
    assert sorted(out for out in outs if out.startswith("models/")) == ["models/adapter", "models/base"]
    assert pipeline["stages"]["base_model"]["outs"] == ["models/base"]
