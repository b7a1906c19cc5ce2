"""Checks of the params against this machine, the launcher and the model's architecture, before any weights load."""
from __future__ import annotations

import importlib.util
import os

from xsumtune.config import Config, ConfigError


def check_runtime(config: Config, processes: int = 1, training: bool = False) -> None:
    """Refuses params this machine, the launcher or the model's architecture can't run, before any weights load.
    training: the train stage's check, which also covers train.optimizer."""
    from xsumtune.distributed import world_size

    if world_size() != processes:
        raise ConfigError(f"the params ask for {processes} processes but {world_size()} were launched; "
                          "run the stage through dvc repro (its cmd starts torchrun with the right count)")
    if config.model.quantization == "nf4" and not installed("bitsandbytes"):
        raise ConfigError("model.quantization: nf4 needs bitsandbytes, which this Python can't import; "
                          "pip install bitsandbytes (requirements.txt pins it) or use model.quantization: none")
    if training and needs_bitsandbytes(config.train.optimizer) and not installed("bitsandbytes"):
        raise ConfigError(f"train.optimizer: {config.train.optimizer} needs bitsandbytes, which this Python can't "
                          "import; pip install bitsandbytes (requirements.txt pins it) or use adamw_torch")
    import torch  # after the checks above, which a wrong launch fails without it

    on_this_host = int(os.environ.get("LOCAL_WORLD_SIZE", processes))
    if on_this_host > 1 and torch.cuda.is_available() and torch.cuda.device_count() < on_this_host:
        raise ConfigError(f"{on_this_host} processes on this host need as many GPUs; "
                          f"{torch.cuda.device_count()} visible")

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    # including_emulation=False: a T4 "supports" bf16 by emulation, slowly; compute capability 8.0+ runs it
    check_precision(config, gpu, gpu is not None and torch.cuda.is_bf16_supported(including_emulation=False))
    try:
        from transformers import AutoConfig

        architecture = AutoConfig.from_pretrained(config.model.name, revision=config.model.revision)
    except (OSError, ValueError):
        return  # unreachable here; loading the model reports it with the hub's own message
    context = getattr(architecture, "max_position_embeddings", None)
    if context is not None and config.prompt.max_seq_len > context:
        raise ConfigError(f"prompt.max_seq_len: {config.prompt.max_seq_len} exceeds {config.model.name}'s context "
                          f"of {context} tokens")


def needs_bitsandbytes(optimizer: str) -> bool:
    """Whether the Trainer builds this optimizer from bitsandbytes: its 8-bit, paged, Lion, RMSprop-bnb
    and AdEMAMix optimizers (transformers' OptimizerNames); adamw_torch*, adafactor, sgd, ... need none
    (adamw_torch_8bit and _4bit are torchao's)."""
    return not optimizer.startswith("adamw_torch") and any(part in optimizer for part in ("8bit", "32bit", "bnb", "paged", "lion", "ademamix"))


def installed(module: str) -> bool:
    """Whether `module` can be imported here, without importing it (bitsandbytes takes seconds)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: present in sys.modules as None (import blocked)
        return False


def check_precision(config: Config, gpu: str | None, bf16_supported: bool) -> None:
    """The dtypes against the machine: gpu, the visible CUDA GPU's name or None; bf16_supported, whether it runs bf16."""
    model = config.model
    if model.quantization == "nf4" and gpu is None:
        raise ConfigError("model.quantization: nf4 needs a CUDA GPU (bitsandbytes 4-bit) and none is visible; "
                          "use model.quantization: none on this machine")
    if model.dtype == "float16" and gpu is None:
        raise ConfigError("model.dtype: float16 training needs a CUDA GPU; use float32 or bfloat16 on a CPU")
    if gpu is not None and not bf16_supported:
        keys = ["model.dtype"] * (model.dtype == "bfloat16") + \
            ["model.compute_dtype"] * (model.quantization == "nf4" and model.compute_dtype == "bfloat16")
        if keys:
            raise ConfigError(f"{' and '.join(keys)}: bfloat16 needs a GPU of compute capability 8.0 or newer and "
                              f"this {gpu} lacks it; use float16 here (with lora.fp32_weights: true)")
