"""Load the base causal LM (pretrained, or random weights from a config) and wrap it with LoRA."""
from __future__ import annotations

import torch

from xsumtune.config import ConfigError, LoraConfig, ModelConfig
from xsumtune.distributed import local_rank

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def device() -> torch.device:
    """This process's device: its own GPU under a multi-process launcher (each rank holds its own copy,
    4-bit ones too; never device_map="auto"), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def quantization_config(config: ModelConfig):
    """bitsandbytes 4-bit NF4 with double quantization, or None."""
    if config.quantization == "none":
        return None
    if not torch.cuda.is_available():
        raise RuntimeError("model.quantization: nf4 needs a CUDA GPU (bitsandbytes 4-bit); "
                           "use model.quantization: none on this machine")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=DTYPES[config.compute_dtype],
    )


def load_base_model(config: ModelConfig, seed: int):
    """The base model on this machine's device; `weights: random` builds it from its config, seeded."""
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = DTYPES[config.dtype]
    quantization = quantization_config(config)
    if torch.cuda.is_available():  # this rank's GPU before anything is built: kernels and NCCL use the current one
        torch.cuda.set_device(device())
    architecture = AutoConfig.from_pretrained(config.name, revision=config.revision)
    overrides = {"hidden_act": "gelu_pytorch_tanh"} if config.fused_gelu and \
        getattr(architecture, "hidden_act", None) == "gelu_new" else {}
    if config.weights == "random":
        torch.manual_seed(seed)
        for key, value in overrides.items():
            setattr(architecture, key, value)
        architecture._attn_implementation = config.attn_implementation
        with device():  # initialise where it runs: seconds on a GPU instead of minutes on its host's CPU
            model = AutoModelForCausalLM.from_config(architecture, dtype=dtype)
        if quantization is not None:
            model = _quantize_random(model, quantization)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            config.name, revision=config.revision, dtype=dtype,
            attn_implementation=config.attn_implementation,
            quantization_config=quantization,
            device_map={"": device()} if quantization is not None else None,
            **overrides,
        )
    if quantization is None:
        model.to(device())
    model.config.pad_token_id = model.config.eos_token_id
    return model


def _quantize_random(model, quantization):
    """Random weights have no checkpoint for from_pretrained to quantize: save them, then load 4-bit."""
    import tempfile

    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        return AutoModelForCausalLM.from_pretrained(
            directory, quantization_config=quantization, device_map={"": device()},
            dtype=model.dtype, attn_implementation=model.config._attn_implementation)


# lora.target_modules is written in Phi-2's module names, the reference experiment's. Other architectures
# name the same layers differently: each Phi name maps to the layers that play its role there. Gated MLPs
# (Llama, Mistral, Gemma, Qwen2) have two input projections where Phi has fc1. A name not in the map
# (o_proj, or any model's own name) is used as written; either way it must be a linear layer of the model.
GATED_MLP_TARGETS = {"dense": ("o_proj",), "fc1": ("gate_proj", "up_proj"), "fc2": ("down_proj",)}
TARGETS_BY_MODEL_TYPE = {
    "phi": {},
    "llama": GATED_MLP_TARGETS,
    "mistral": GATED_MLP_TARGETS,
    "gemma": GATED_MLP_TARGETS,
    "gemma2": GATED_MLP_TARGETS,
    "qwen2": GATED_MLP_TARGETS,
}


def resolve_target_modules(targets: tuple[str, ...] | str, model) -> list[str] | str:
    """The model's own names for lora.target_modules; `all-linear` is left to peft."""
    if isinstance(targets, str):
        return targets
    model_type = model.config.model_type
    names = TARGETS_BY_MODEL_TYPE.get(model_type, {})
    resolved = list(dict.fromkeys(target for name in targets for target in names.get(name, (name,))))
    linear = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear)}
    missing = [name for name in resolved if name not in linear]
    if missing:
        raise ConfigError(f"lora.target_modules: {', '.join(missing)} (from {', '.join(targets)}) "
                          f"not among {model_type}'s linear layers {sorted(linear)}; "
                          f"name them or use all-linear")
    return resolved


def lora_config(config: LoraConfig, model):
    """peft's LoraConfig, its target modules resolved for this model's architecture."""
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, bias=config.bias, use_dora=config.use_dora,
        target_modules=resolve_target_modules(config.target_modules, model),
        task_type="CAUSAL_LM",
    )


def apply_lora(model, config: LoraConfig, seed: int, gradient_checkpointing: bool = False):
    """Base frozen, LoRA adapter trainable; the seed fixes the adapter's initial weights."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    torch.manual_seed(seed)
    return get_peft_model(model, lora_config(config, model), autocast_adapter_dtype=config.fp32_weights)


def dequantize(model, config: ModelConfig):
    """A 4-bit model's linear layers as plain ones in compute_dtype, from the same dequantization each 4-bit
    matmul runs (bitsandbytes' dequantize_4bit); any other model as it is."""
    if not getattr(model, "is_loaded_in_4bit", False):
        return model
    model = model.dequantize(dtype=DTYPES[config.compute_dtype])
    model.is_loaded_in_4bit = False
    return model


def attach_adapter(base_model, adapter_dir: str, merge: bool):
    """Base + trained adapter in eval mode; merged into the base weights when asked. Never into 4-bit
    weights, where merging would round the adapter away: config validation refuses that pair already."""
    from peft import PeftModel

    if merge and getattr(base_model, "is_loaded_in_4bit", False):
        raise ConfigError("generate.merge_adapter: must be false with model.quantization: nf4: the adapter is never "
                          "merged into 4-bit weights, where rounding would erase it")
    model = PeftModel.from_pretrained(base_model, adapter_dir)
    if merge:
        model = model.merge_and_unload()
    return model.eval()
