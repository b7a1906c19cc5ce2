"""LoRA invariants after real Trainer steps: base weights frozen and unchanged, adapter weights moved."""
import dataclasses
import json

import torch
from safetensors.torch import load_file

from conftest import ROOT, tiny, tiny_config
from xsumtune.model.loading import apply_lora, load_base_model
from xsumtune.data.tokenization import PromptEncoder
from xsumtune.train.training import train_adapter

ARTICLES = [
    ("The city council voted to close the library on Friday.", "A library is to close."),
    ("Heavy rain flooded roads across the county overnight.", "Roads have been flooded."),
    ("The club signed a striker from a rival team on loan.", "A striker has joined on loan."),
    ("Scientists found a new species of frog in the forest.", "A new frog species has been found."),
]


def examples(tokenizer):
    encoder = PromptEncoder(tokenizer, "direct")
    return [encoder.encode(d, s, 128) for d, s in ARTICLES]


def test_training_moves_the_adapter_only(tmp_path, tokenizer, tiny_model_config):
    config = tiny_config(
        model=tiny_model_config, lora=tiny("lora"),
        train=tiny("train", epochs=2, batch_size=2, grad_accum=1, lr=1.0e-2, warmup_steps=0, logging_steps=1,
                          optimizer="adamw_torch", gradient_checkpointing=False),
    )
    model = apply_lora(load_base_model(config.model, config.seed), config.lora, config.seed)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    targets = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trainable}
    assert targets == {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"}

    rows = examples(tokenizer)
    metrics = train_adapter(config, model, tokenizer, rows, rows[:2], str(tmp_path / "adapter"), str(tmp_path / "live"),
                            str(tmp_path / "checkpoints"))

    after = dict(model.named_parameters())
    base_changed = [n for n in before if n not in trainable and not torch.equal(before[n], after[n])]
    adapter_changed = [n for n in trainable if "lora_B" in n and not torch.equal(before[n], after[n])]
    assert base_changed == []
    assert len(adapter_changed) == sum("lora_B" in n for n in trainable)  # every B matrix moved off zero
    assert metrics["train_steps"] == 4 and metrics["eval_perplexity"] > 1

    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert saved and all("lora_" in key for key in saved)  # the adapter, never the base model
    live = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert {"train_loss", "eval_loss", "eval_perplexity"} <= set(live)
    assert (tmp_path / "live" / "plots" / "metrics" / "train" / "loss.tsv").exists()


def test_a_run_shorter_than_one_logging_window_still_reports_its_train_loss(tmp_path, tokenizer, tiny_model_config):
    """2 steps, logging every 10: Trainer logs no window, so the train loss is the run's own mean, not NaN."""
    _, _, metrics = small_run(tmp_path, tokenizer, tiny_model_config, logging_steps=10)
    assert metrics["train_steps"] == 2
    assert 0 < metrics["train_loss"] < 20  # finite: a NaN fails both comparisons
    live = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert live["train_loss"] == metrics["train_loss"]


def test_seed_fixes_base_and_adapter_init(tiny_model_config):
    def build(seed):
        model = apply_lora(load_base_model(tiny_model_config, seed), tiny("lora"), seed)
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    first, again, other = build(1), build(1), build(2)
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert any(not torch.equal(first[n], other[n]) for n in first if "lora_A" in n)


def test_all_linear_targets_every_linear_layer(tiny_model_config):
    model = apply_lora(load_base_model(tiny_model_config, 0), tiny("lora", target_modules="all-linear"), 0)
    targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"} <= targets


def test_fused_gelu_and_bf16_adapter_keep_outputs(tiny_model_config):
    """The speed switches compute the same function: gelu_new as one kernel, adapter weights in the base dtype."""

    ids = torch.tensor([[11, 502, 77, 3040, 9]])
    plain = load_base_model(dataclasses.replace(tiny_model_config, fused_gelu=False), 0).eval()
    fused = load_base_model(tiny_model_config, 0).eval()
    assert type(fused.model.layers[0].mlp.activation_fn).__name__ == "GELUTanh"
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, fused(ids).logits, atol=1e-5)
    adapter = apply_lora(fused, tiny("lora", fp32_weights=False), 0)
    assert all(p.dtype == torch.float32 for n, p in adapter.named_parameters() if "lora_" in n)  # base is fp32 here


def test_fast_training_path_keeps_each_examples_loss(tokenizer, tiny_model_config):
    """The fast recipe (fused gelu, bf16 adapter weights, batches grouped by length) gives each example the
    loss the plain recipe gives it, within bf16 tolerance; padding never changes an example's loss."""

    import sys

    sys.path.insert(0, str(ROOT / "bench"))  # the loss the parity benchmark measures, used here on a CPU
    from common import per_example_loss
    from xsumtune.train.training import CompletionCollator

    rows = examples(tokenizer)
    collate = CompletionCollator(tokenizer.pad_token_id)
    config = dataclasses.replace(tiny_model_config, dtype="bfloat16")

    def build(fused_gelu, fp32_weights, scale=0.05):
        model = apply_lora(load_base_model(dataclasses.replace(config, fused_gelu=fused_gelu), 0),
                           tiny("lora", fp32_weights=fp32_weights), 0)
        with torch.no_grad():  # the same non-zero adapter in both
            generator = torch.Generator().manual_seed(1)
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * scale)
        return model.eval()

    batch = collate(rows)
    plain_loss, fast_loss = per_example_loss(build(False, True), batch), per_example_loss(build(True, False), batch)
    assert torch.allclose(plain_loss, fast_loss, rtol=0, atol=5e-3), (plain_loss, fast_loss)
    alone = torch.cat([per_example_loss(build(True, False), collate([row])) for row in rows])
    assert torch.allclose(alone, fast_loss, rtol=0, atol=5e-3)  # padding and batch-mates leave each loss alone
    without_adapter = per_example_loss(build(True, False, scale=0.0), batch)
    assert not torch.allclose(without_adapter, fast_loss, rtol=0, atol=5e-3)  # the tolerance can tell a change


def small_run(tmp_path, tokenizer, model_config, lora=None, **train):
    config = tiny_config(
        model=model_config, lora=lora or tiny("lora"),
        train=tiny("train", **{**dict(epochs=1, batch_size=2, grad_accum=1, lr=1.0e-2, warmup_steps=0, logging_steps=1,
                                      optimizer="adamw_torch", gradient_checkpointing=False), **train}),
    )
    model = apply_lora(load_base_model(config.model, config.seed), config.lora, config.seed)
    rows = examples(tokenizer)
    metrics = train_adapter(config, model, tokenizer, rows, rows[:2], str(tmp_path / "adapter"), str(tmp_path / "live"),
                            str(tmp_path / "checkpoints"))
    return config, model, metrics


def test_dora_trains_its_magnitudes_and_merges_into_the_same_function(tmp_path, tokenizer, tiny_model_config):
    from xsumtune.model.loading import attach_adapter

    lora = tiny("lora", use_dora=True, dropout=0.0)
    initial = apply_lora(load_base_model(tiny_model_config, 42), lora, 42)
    magnitudes = {n: p.detach().clone() for n, p in initial.named_parameters() if "lora_magnitude_vector" in n}
    assert magnitudes  # DoRA's per-output magnitudes are trainable beside A and B
    config, model, _ = small_run(tmp_path, tokenizer, tiny_model_config, lora=lora)
    trained = dict(model.named_parameters())
    assert all(not torch.equal(magnitudes[n], trained[n]) for n in magnitudes)

    ids = torch.tensor([[11, 502, 77, 3040, 9, 120]])
    with torch.no_grad():
        unmerged = attach_adapter(load_base_model(config.model, 0), str(tmp_path / "adapter"), merge=False)(ids).logits
        merged = attach_adapter(load_base_model(config.model, 0), str(tmp_path / "adapter"), merge=True)(ids).logits
        plain = load_base_model(config.model, 0).eval()(ids).logits
    assert torch.allclose(unmerged, merged, atol=1e-4)
    assert not torch.allclose(unmerged, plain, atol=1e-4)  # the adapter changed the function that was merged


def test_neftune_noise_acts_while_training_only(tmp_path, tokenizer, tiny_model_config):
    _, plain, _ = small_run(tmp_path / "plain", tokenizer, tiny_model_config)
    _, noisy, _ = small_run(tmp_path / "noisy", tokenizer, tiny_model_config, neftune_alpha=5.0)
    plain_b = {n: p for n, p in plain.named_parameters() if "lora_B" in n}
    noisy_b = dict(noisy.named_parameters())
    assert any(not torch.equal(plain_b[n], noisy_b[n]) for n in plain_b)  # same seed, data and steps: the noise
    embed = noisy.get_input_embeddings()
    ids = torch.tensor([[11, 502, 77]])
    noisy.train()
    assert torch.equal(embed(ids), embed(ids))  # the hook is gone once training ends: no noise in generation


def test_compiled_layers_train_to_the_same_loss_and_adapter_names(tmp_path, tokenizer, tiny_model_config,
                                                                  monkeypatch):
    """train.compile: every decoder layer compiled in place, with train.compile_mode as torch.compile's mode
    (none for default), the same loss as eager (float32 on the CPU, where reduce-overhead records no CUDA
    graph), and the saved adapter holds the same tensor names."""
    from xsumtune.train.training import compile_layers

    modes_seen = []
    real_compile = torch.nn.Module.compile

    def recording_compile(self, *args, **kwargs):  # the real Module.compile, its mode noted
        modes_seen.append(kwargs.get("mode"))
        return real_compile(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", recording_compile)

    model_config = dataclasses.replace(tiny_model_config, name=str(ROOT / "models" / "configs" / "tiny-llama"))
    layers = apply_lora(load_base_model(model_config, 0), tiny("lora"), 0)
    assert compile_layers(layers) == layers.config.num_hidden_layers
    rows = examples(tokenizer)[:2]
    width = min(len(row["input_ids"]) for row in rows)  # one shape: one compile
    rows = [{"input_ids": row["input_ids"][:width], "labels": row["labels"][:width]} for row in rows]
    results = {}
    for mode in (None, "reduce-overhead"):
        compiled = mode is not None
        modes_seen.clear()
        config = tiny_config(model=model_config, lora=tiny("lora", dropout=0.0), train=tiny(
            "train", epochs=1, batch_size=2, grad_accum=1, lr=1.0e-2, warmup_steps=0, logging_steps=1,
            optimizer="sgd", gradient_checkpointing=False, compile=compiled,  # sgd: a step that follows the gradient
            compile_mode=mode or "default"))
        model = apply_lora(load_base_model(config.model, config.seed), config.lora, config.seed)
        out = tmp_path / str(compiled)
        metrics = train_adapter(config, model, tokenizer, rows, rows, str(out / "adapter"), str(out / "live"),
                                str(out / "checkpoints"))
        results[compiled] = metrics, load_file(out / "adapter" / "adapter_model.safetensors")
        layer_calls = [layer._compiled_call_impl for layer in model.get_base_model().model.layers]
        assert all(call is not None for call in layer_calls) == compiled  # the switch took effect, or didn't
        assert modes_seen == ([mode] * len(layer_calls) if compiled else [])
    (eager, eager_saved), (compiled, compiled_saved) = results[False], results[True]
    assert abs(eager["train_loss"] - compiled["train_loss"]) < 1e-4
    assert abs(eager["eval_loss"] - compiled["eval_loss"]) < 1e-4
    assert eager_saved.keys() == compiled_saved.keys()
    assert all(torch.allclose(eager_saved[k], compiled_saved[k], atol=1e-5) for k in eager_saved)
