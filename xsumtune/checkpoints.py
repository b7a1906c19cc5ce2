"""Resumable work: a fingerprint says whether saved progress belongs to this exact run."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

FINGERPRINT = "fingerprint.json"


def fingerprint(*parts) -> str:
    """A hash of config sections (dataclasses), strings and the bytes of files or directories."""
    digest = hashlib.sha256()
    for part in parts:
        if dataclasses.is_dataclass(part):
            digest.update(json.dumps(dataclasses.asdict(part), sort_keys=True, default=str).encode())
        elif isinstance(part, Path):
            files = sorted(p for p in part.rglob("*") if p.is_file()) if part.is_dir() else [part]
            for file in files:
                digest.update(file.name.encode())
                digest.update(hashlib.sha256(file.read_bytes()).digest())
        else:
            digest.update(str(part).encode())
    return digest.hexdigest()


def claim(directory: str | Path, key: str) -> Path:
    """The directory, emptied unless it holds progress made under the same fingerprint."""
    directory = Path(directory)
    marker = directory / FINGERPRINT
    if marker.exists() and json.loads(marker.read_text()).get("fingerprint") == key:
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    marker.write_text(json.dumps({"fingerprint": key}) + "\n")
    return directory


def release(directory: str | Path) -> None:
    """Finished: drop the saved progress, keep the (persisted) directory."""
    directory = Path(directory)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)


def latest_complete_checkpoint(directory: str | Path) -> str | None:
    """The newest Trainer checkpoint with every file a resume needs; partial ones (a kill mid-save) go."""
    needed = ("trainer_state.json", "optimizer.pt", "scheduler.pt", "adapter_model.safetensors")
    checkpoints = sorted(Path(directory).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for checkpoint in reversed(checkpoints):
        # rng_state.pth for one process, rng_state_<rank>.pth for each of several
        if all((checkpoint / name).exists() for name in needed) and any(checkpoint.glob("rng_state*.pth")):
            return str(checkpoint)
        shutil.rmtree(checkpoint, ignore_errors=True)
    return None
