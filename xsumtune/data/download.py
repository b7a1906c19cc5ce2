"""A hub dataset as local files (<split>.parquet), snapshotted once at a pinned revision, so that preprocess
reads local files only and `dvc push` stores the snapshot like any data."""
from __future__ import annotations

import json
from pathlib import Path

from xsumtune.config import DownloadConfig
from xsumtune.data.sources import DataError
from xsumtune.io import atomic_dir

SOURCE_FILE = "SOURCE.json"  # what the directory holds and where it came from, written into it


def download_dataset(config: DownloadConfig, out_dir: str | Path) -> dict:
    """Writes <split>.parquet for every split of config.dataset, and SOURCE.json; with no dataset, SOURCE.json
    alone says so (the stage still has its output, so the pipeline is the same for every profile)."""
    with atomic_dir(out_dir) as scratch:
        if config.dataset is None:
            record = {"dataset": None, "note": "nothing downloaded: download.dataset is null, so preprocess reads "
                                               "data.source, a directory in the repository"}
        else:
            record = _snapshot(config, scratch)
        (scratch / SOURCE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def _snapshot(config: DownloadConfig, out_dir: Path) -> dict:
    import datasets

    local = Path(config.dataset).is_dir()  # a dataset directory in the hub's layout, for offline use and tests
    revision, note = (None, "a local dataset directory has no revision") if local else resolve_revision(config)
    rows = {}
    for split in config.splits:
        try:
            dataset = datasets.load_dataset(config.dataset, split=split, revision=revision)
        except Exception as error:  # the hub client and the builders raise many types; all mean "can't load it"
            raise DataError(_cannot(config, f"split {split!r}: {type(error).__name__}: {_first_line(error)}")) from None
        dataset.to_parquet(out_dir / f"{split}.parquet")
        rows[split] = len(dataset)
    return {"dataset": config.dataset, "revision": revision, "requested_revision": config.revision,
            "revision_note": note, "rows": rows, "loader": f"datasets {datasets.__version__}"}


def resolve_revision(config: DownloadConfig) -> tuple[str | None, str | None]:
    """The commit to load, asked of the hub first: it answers or fails in about a second, where load_dataset
    retries an unreachable hub for half a minute. With HF_HUB_OFFLINE set, the hub's local cache is used and
    a null revision can't be resolved; the record says so."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return config.revision, (None if config.revision else "not resolved: HF_HUB_OFFLINE is set, so the "
                                 "newest revision in the local hub cache was loaded")
    try:
        return HfApi().dataset_info(config.dataset, revision=config.revision).sha, None
    except Exception as error:  # the hub client raises many types; all mean "can't get it"
        raise DataError(_cannot(config, f"{type(error).__name__}: {_first_line(error)}")) from None


def _cannot(config: DownloadConfig, reason: str) -> str:
    return (f"download.dataset: cannot download {config.dataset} (revision {config.revision}) from the Hugging "
            f"Face hub ({reason}); offline, `dvc pull data/hub` from a remote that has it, or set "
            "download.dataset: null and data.source: <local dir> (a directory of <split>.jsonl/.parquet/.csv)")


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else "no message"
