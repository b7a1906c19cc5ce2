"""What a stage ran with: the pinned hub revisions, library versions, Python and the device.

Each stage writes it beside its metrics (metrics/run/<stage>.json), so every experiment's commit
carries it and `dvc metrics diff` shows when two runs differ in more than their params.
"""
from __future__ import annotations

import platform
import sys
from importlib import metadata

from xsumtune.config import Config

# Distribution names (as pip knows them) of what decides the numbers; a missing one is recorded as null.
LIBRARIES = ("torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes", "evaluate",
             "rouge-score", "dvc", "dvclive")


def library_versions() -> dict[str, str | None]:
    # Read from the installed metadata, not by import: importing bitsandbytes on a CPU machine is slow and noisy.
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description() -> dict:
    import torch  # here: a stage that failed before writing its record never pays for torch's import

    if torch.cuda.is_available():
        return {"type": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
                "cuda": torch.version.cuda}
    return {"type": "cpu", "name": platform.machine(), "threads": torch.get_num_threads()}


def describe_run(config: Config, model=None) -> dict:
    """The run's provenance. model: the loaded model, for stages that load one (its config knows the hub
    commit it came from); preprocess has only the tokenizer, so its record has no model section."""
    record = {
        # as requested; data/hub/SOURCE.json holds the commit the download stage resolved a branch or null to
        "data": {"source": config.data.source, "dataset": config.download.dataset,
                 "revision": config.download.revision if config.download.dataset else None},
        "tokenizer": {"name": config.model.tokenizer, "revision": config.model.revision},
    }
    if model is not None:
        record["model"] = {"name": config.model.name, "revision": config.model.revision,
                           "weights": config.model.weights,
                           "loaded_commit": getattr(model.config, "_commit_hash", None)}
    return record | {
        "libraries": library_versions(),
        "python": platform.python_version(),
        "platform": f"{sys.platform}-{platform.machine()}",
        "device": device_description(),
    }
