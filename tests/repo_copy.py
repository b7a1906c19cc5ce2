"""Helpers for tests that run DVC on a temporary copy of the repository, as its own git repository."""
import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, compose_params

GIT_USER = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
# -S overrides that shrink the default profile to seconds per experiment: same stages, less data.
SHRINK = {"data.train_size": 16, "data.validation_size": 4, "data.test_size": 4, "prompt.max_seq_len": 256,
          "generate.zero_shot": False}


def run(args, cwd, check=True, env=None, timeout=600):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def run_together(commands, cwd, timeout=600) -> list[subprocess.CompletedProcess]:
    """run() for independent commands, all at once (a stage process mostly imports, on one core); each checked."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: run(args, cwd, timeout=timeout), commands))


def dvc(*args, cwd, check=True, env=None, timeout=600):
    return run([sys.executable, "-m", "dvc", *map(str, args)], cwd, check, env, timeout)


def git(*args, cwd, check=True):
    return run(["git", *GIT_USER, *map(str, args)], cwd, check)


def copy_repo(copy: Path, profile: str = "tiny") -> Path:
    """The committed tree plus working changes, without outputs, committed on branch main; its default
    profile (what `dvc repro` and `dvc exp run` use) is `profile`: the tiny one keeps tests in seconds."""
    copy.mkdir(parents=True, exist_ok=True)
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    config = copy / "conf" / "config.yaml"
    config.write_text(config.read_text().replace("- profile: smol-cpu", f"- profile: {profile}"))
    compose_params(copy / "params.yaml", profile)
    git("init", "-q", cwd=copy)
    commit(copy, "copy")
    return copy


def commit(repo: Path, message: str) -> None:
    git("add", "-A", cwd=repo)
    git("commit", "-qm", message, "--allow-empty", cwd=repo)


def shrink_params(repo: Path, changes: dict | None = None) -> None:
    """Writes SHRINK (and `changes`, dotted keys too) into params.yaml, for a plain `dvc repro`."""
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in {**SHRINK, **(changes or {})}.items():
        section, name = key.split(".")
        params[section][name] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def differing_files(first: Path, second: Path, paths) -> list[str]:
    """The paths (files or directories, recursively) whose bytes differ between two trees."""
    differ = []
    for path in paths:
        a, b = first / path, second / path
        if a.is_dir():
            names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
            if names != sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file()):
                differ.append(path)
                continue
            differ += [f"{path}/{n}" for n in names if not filecmp.cmp(a / n, b / n, shallow=False)]
        elif not (b.is_file() and filecmp.cmp(a, b, shallow=False)):
            differ.append(path)
    return differ


def clean_env(**extra) -> dict:
    """The environment without any cloud credentials or config of the machine's user."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DVC_"))}
    return env | extra


def copy_tree(repo: Path, copy: Path) -> Path:
    """A copy of a repository that has run (git history, DVC cache and outputs): its own to change."""
    shutil.copytree(repo, copy, symlinks=True)
    return copy
