"""The library's layout: each stage's dvc.yaml deps are the files it imports; what needs no model needs no torch;
the README's map names every module."""
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
