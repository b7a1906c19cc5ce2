"""Other base models: Phi-2's LoRA target names resolve to each architecture's own layers, and a few real
Trainer steps move the adapter only, on tiny Llama, Mistral, Gemma, Gemma 2 and Qwen2 models."""
import dataclasses
import json

import pytest
import torch
from transformers import AutoConfig, Gemma2Config, GemmaConfig, LlamaConfig, MistralConfig, Qwen2Config

from conftest import ROOT, tiny, tiny_config
from xsumtune.config import ConfigError
from xsumtune.model.loading import apply_lora, load_base_model, resolve_target_modules
from xsumtune.data.tokenization import PromptEncoder
from xsumtune.train.training import train_adapter

PHI_TARGETS = ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")
GATED = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
# The architectures of Llama-2-7B, Mistral-7B, Gemma-7B (and Gemma 2, Qwen2) shrunk to CPU size; the vocab
# and special ids are the Phi-2 tokenizer's, so the real tokenizer feeds them.
TINY = dict(vocab_size=51200, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=512, bos_token_id=50256, eos_token_id=50256, pad_token_id=50256)
ARCHITECTURES = {
    "llama": lambda: LlamaConfig(num_key_value_heads=4, **TINY),
    "mistral": lambda: MistralConfig(num_key_value_heads=2, sliding_window=256, **TINY),
    "gemma": lambda: GemmaConfig(num_key_value_heads=4, head_dim=16, **TINY),
    "gemma2": lambda: Gemma2Config(num_key_value_heads=2, head_dim=16, sliding_window=256, **TINY),
    "qwen2": lambda: Qwen2Config(num_key_value_heads=2, **TINY),
}
ARTICLES = [
    ("The city council voted to close the library on Friday.", "A library is to close."),
    ("Heavy rain flooded roads across the county overnight.", "Roads have been flooded."),
]


def model_config(tmp_path, tiny_model_config, architecture):
    ARCHITECTURES[architecture]().save_pretrained(tmp_path / architecture)
    return dataclasses.replace(tiny_model_config, name=str(tmp_path / architecture))


def adapted_layers(model) -> set[str]:
    return {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_phi_targets_resolve_and_training_moves_the_adapter_only(tmp_path, tokenizer, tiny_model_config,
                                                                architecture):
    config = tiny_config(
        model=model_config(tmp_path, tiny_model_config, architecture), lora=tiny("lora", target_modules=PHI_TARGETS),
        train=tiny("train", epochs=2, batch_size=2, grad_accum=1, lr=1.0e-2, warmup_steps=0, logging_steps=1,
                          optimizer="adamw_torch"),
    )
    model = apply_lora(load_base_model(config.model, config.seed), config.lora, config.seed)
    assert model.config.model_type == architecture
    assert adapted_layers(model) == GATED  # dense → o_proj, fc1 → gate_proj + up_proj, fc2 → down_proj
    assert set(model.peft_config["default"].target_modules) == GATED
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    encoder = PromptEncoder(tokenizer, "direct")
    rows = [encoder.encode(d, s, 96) for d, s in ARTICLES]
    metrics = train_adapter(config, model, tokenizer, rows, rows, str(tmp_path / "adapter"), str(tmp_path / "live"),
                            str(tmp_path / "checkpoints"))

    after = dict(model.named_parameters())
    assert metrics["train_steps"] == 2
    assert [n for n in before if n not in trainable and not torch.equal(before[n], after[n])] == []
    moved = [n for n in trainable if "lora_B" in n and not torch.equal(before[n], after[n])]
    assert len(moved) == sum("lora_B" in n for n in trainable)
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert set(saved["target_modules"]) == GATED


def test_phi_names_stay_phi_names(tiny_model_config):
    model = load_base_model(tiny_model_config, 0)
    assert resolve_target_modules(PHI_TARGETS, model) == list(PHI_TARGETS)
    assert resolve_target_modules("all-linear", model) == "all-linear"


def test_own_names_pass_through_and_unknown_names_fail(tmp_path, tiny_model_config):
    model = load_base_model(model_config(tmp_path, tiny_model_config, "llama"), 0)
    assert resolve_target_modules(("q_proj", "o_proj"), model) == ["q_proj", "o_proj"]
    with pytest.raises(ConfigError, match=r"lora.target_modules: qkv \(from q_proj, qkv\) not among llama's"):
        resolve_target_modules(("q_proj", "qkv"), model)
    phi = load_base_model(tiny_model_config, 0)
    with pytest.raises(ConfigError, match="o_proj"):  # Llama's name on Phi: caught before training
        resolve_target_modules(("o_proj",), phi)


@pytest.mark.parametrize("directory, model_type", [("tiny-llama", "llama"), ("tiny-mistral", "mistral"),
                                                   ("tiny-gemma", "gemma")])
def test_shipped_tiny_configs(tokenizer, directory, model_type):
    """models/configs/tiny-* let `-S model.name=models/configs/tiny-llama` run on the default profile."""
    config = AutoConfig.from_pretrained(ROOT / "models" / "configs" / directory)
    assert config.model_type == model_type and config.num_hidden_layers == 2
    assert config.eos_token_id == tokenizer.eos_token_id and config.vocab_size >= len(tokenizer)


def test_prompts_start_with_bos_when_the_tokenizer_adds_one(tokenizer):
    """Llama, Mistral and Gemma tokenizers prepend bos and their models expect it; Phi-2's adds none."""
    import copy

    from tokenizers.processors import TemplateProcessing

    phi = PromptEncoder(tokenizer, "direct").encode("An article.", "A summary.", 64)
    assert phi["input_ids"][0] != tokenizer.eos_token_id
    with_bos = copy.deepcopy(tokenizer)
    bos = tokenizer.eos_token_id  # the Phi-2 vocabulary's one special token stands in for a bos
    with_bos._tokenizer.post_processor = TemplateProcessing(single=f"{tokenizer.eos_token} $A",
                                                            special_tokens=[(tokenizer.eos_token, bos)])
    encoder = PromptEncoder(with_bos, "direct")
    example = encoder.encode("An article.", "A summary.", 64)
    assert example["input_ids"] == [bos] + phi["input_ids"]
    assert encoder.encode_prompt("An article.", 64)[0][0] == bos
    assert example["labels"][0] == -100 and example["labels"][1:] == phi["labels"]
