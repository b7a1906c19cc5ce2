"""The library's layout: each stage's dvc.yaml deps are the files it imports; what needs no model needs no torch;
the README's map names every module."""
import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from imports import library_files

# Commands that read text and numbers only: importing them must not import torch (seconds of start-up).
NO_MODEL = ["stages", "stages.score", "stages.score_systems", "stages.compare", "stages.baseline", "stages.report",
            "stages.human_eval", "stages.seeds", "xsumtune.score.systems", "xsumtune.config"]


def stage_modules(cmd: str) -> list[str]:
    """The stage modules a dvc.yaml cmd runs: stages.launch and the stage it launches, or the one module."""
    return re.findall(r"\bstages\.\w+", cmd)


@pytest.fixture(scope="module")
def imported():
    """For each module of NO_MODEL, a new process that imports it and prints which of torch, transformers and
    peft it loaded: all at once."""
    import concurrent.futures

    def check(module):
        code = f"import sys, {module}; print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)

    with concurrent.futures.ThreadPoolExecutor(len(NO_MODEL)) as pool:
        return dict(zip(NO_MODEL, pool.map(check, NO_MODEL)))


@pytest.mark.parametrize("module", NO_MODEL)
def test_commands_without_a_model_do_not_import_torch(imported, module):
    result = imported[module]
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# A model stage whose params or input files are bad stops before importing torch, transformers or peft (seconds
# of imports): its params file (written by the fixture) and its arguments; the error message it ends with.
EARLY_FAILURES = {
    "train-unknown-key": ("stages.train", "typo", ["--train-data", "x", "--validation-data", "x", "--adapter-dir", "a",
                                                   "--live-dir", "l", "--checkpoint-dir", "c"], "unknown key train.epoch"),
    "train-process-count": ("stages.train", "two-processes", ["--train-data", "x", "--validation-data", "x",
                                                              "--adapter-dir", "a", "--live-dir", "l",
                                                              "--checkpoint-dir", "c"],
                            "ask for 2 processes but 1 were launched"),
    "generate-unknown-key": ("stages.generate", "typo", ["--test-data", "x", "--adapter-dir", "a", "--generations", "g",
                                                         "--progress-dir", "p"], "unknown key train.epoch"),
    "preprocess-bad-file": ("stages.preprocess", "bad-file", ["--out-dir", "o", "--stats", "s.json"],
                            "malformed-json/test.jsonl: row 2: field '-': not valid JSON"),
}


@pytest.fixture(scope="module")
def failed_early(tmp_path_factory):
    """Each of EARLY_FAILURES run as `python -m` runs it, in a new process that then prints which of torch,
    transformers and peft it loaded: all at once."""
    import concurrent.futures

    from conftest import tiny_params

    folder = tmp_path_factory.mktemp("early")
    params = {"typo": tiny_params(), "two-processes": tiny_params(), "bad-file": tiny_params()}
    params["typo"]["train"]["epoch"] = 2
    params["two-processes"]["train"]["processes"] = 2
    params["bad-file"]["data"].update(source=str(ROOT / "tests" / "fixtures" / "bad-input" / "malformed-json"),
                                      train_split="test", validation_split="test", test_split="test", train_size=1,
                                      validation_size=1, test_size=None, min_test_size=1)
    for name, values in params.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(values))

    def check(case):
        module, name, args, _ = EARLY_FAILURES[case]
        code = ("import runpy, sys\n"
                f"sys.argv = {[module, '--params', str(folder / f'{name}.yaml'), *args]!r}\n"
                "try:\n"
                f"    runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
                "finally:\n"
                "    print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
        return subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})

    with concurrent.futures.ThreadPoolExecutor(len(EARLY_FAILURES)) as pool:
        return dict(zip(EARLY_FAILURES, pool.map(check, EARLY_FAILURES)))


@pytest.mark.parametrize("case", sorted(EARLY_FAILURES))
def test_a_model_stage_with_bad_params_or_input_stops_before_importing_torch(failed_early, case):
    result = failed_early[case]
    assert result.returncode == 1, result.stderr
    assert EARLY_FAILURES[case][3] in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_stage_lists_exactly_the_library_files_it_imports():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        imported = sorted(set().union(*(library_files(module) for module in stage_modules(stage["cmd"]))))
        listed = sorted(dep for dep in stage["deps"] if dep.startswith(("stages/", "xsumtune/")))
        assert listed == imported, name


def test_the_readme_map_names_every_module():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```\nxsumtune/")
    library_map = readme[start:readme.index("```", start + 3)]
    for path in sorted((ROOT / "xsumtune").rglob("*.py")):
        relative = path.relative_to(ROOT / "xsumtune")
        if path.name == "__init__.py" and relative.parent.name:
            assert f"{relative.parent.name}/" in library_map, relative
        elif path.name != "__init__.py":
            assert f" {path.name} " in library_map or f" {path.name}\n" in library_map, relative
