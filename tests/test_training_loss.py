"""The train stage's loss computes logits at labelled positions only: the same loss and gradients as
Trainer's own, which computes them everywhere, for every architecture, and the same loss curve."""
import dataclasses

import pytest
import torch
from transformers import Trainer

from conftest import ARTICLES, ROOT, tiny, tiny_config
from xsumtune.config import Config
from xsumtune.data.tokenization import PromptEncoder
from xsumtune.model.loading import apply_lora, load_base_model
from xsumtune.train.training import (LABELLED, CompletionCollator, LabelledCollator, labelled_logits_trainer,
                                     labelled_positions, to_dataset, training_arguments)


def build(config: Config, tokenizer, tmp_path, trainer_class, rows):
    """trainer_class on rows; the project's trainer with the stage's collator (labelled positions found on the host)."""
    model = apply_lora(load_base_model(config.model, config.seed), config.lora, config.seed)
    collator = CompletionCollator(tokenizer.pad_token_id)
    return trainer_class(model=model, args=training_arguments(config, str(tmp_path)),
                         train_dataset=to_dataset(rows), eval_dataset=to_dataset(rows[:2]),
                         data_collator=collator if trainer_class is Trainer else LabelledCollator(collator))


def test_labelled_positions_index_the_flattened_batch():
    labels = torch.tensor([[-100, -100, 5, 6], [-100, 7, -100, 8]])
    assert labelled_positions(labels).tolist() == [1, 2, 4, 6]  # position t is labelled when t + 1 is
    batch = LabelledCollator(CompletionCollator(0))([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}])
    assert batch[LABELLED].tolist() == [0, 1]


def config_for(model_config, **train) -> Config:
    defaults = dict(epochs=1, batch_size=2, grad_accum=2, lr=1.0e-2, warmup_steps=0, logging_steps=1,
                    save_steps=1000, optimizer="adamw_torch", gradient_checkpointing=False)
    return tiny_config(model=model_config, lora=tiny("lora", dropout=0.0), train=tiny("train", **{**defaults, **train}))


@pytest.mark.parametrize("architecture", ["tiny-phi", "tiny-llama"])
def test_loss_and_gradients_equal_trainers_own(tmp_path, tokenizer, tiny_model_config, architecture):
    model_config = dataclasses.replace(tiny_model_config, name=str(ROOT / "models" / "configs" / architecture))
    config = config_for(model_config)
    encoder = PromptEncoder(tokenizer, "direct")
    rows = [encoder.encode(d, s, 128) for d, s in ARTICLES]
    batch = CompletionCollator(tokenizer.pad_token_id)(rows)  # right-padded: rows of different lengths
    assert batch["attention_mask"].sum(1).unique().numel() > 1

    results = []
    for trainer_class in (Trainer, labelled_logits_trainer()):
        trainer = build(config, tokenizer, tmp_path / trainer_class.__name__, trainer_class, rows)
        model = trainer.model
        for items in (None, torch.tensor(37)):  # mean over the batch; or summed over an accumulation window
            model.zero_grad()
            # the labelled positions found on the host (the stage's collator), and on the batch's own device
            inputs = trainer.data_collator(rows) if items is None else dict(batch)
            loss = trainer.compute_loss(model, inputs, num_items_in_batch=items)
            loss.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
            results.append((loss.detach(), grads))
    plain, labelled = results[:2], results[2:]
    for (plain_loss, plain_grads), (loss, grads) in zip(plain, labelled):
        assert torch.allclose(loss, plain_loss, rtol=1e-5, atol=1e-6), (loss, plain_loss)
        assert plain_grads.keys() == grads.keys()
        for name in grads:
            assert torch.allclose(grads[name], plain_grads[name], rtol=1e-4, atol=1e-7), name
    assert not torch.allclose(plain[0][0], plain[1][0])  # the two reductions differ: the check can tell them apart


def test_loss_curve_equals_trainers_own(tmp_path, tokenizer, tiny_model_config):
    """40 steps here; bench/train_parity.py compares 200 on a GPU with the real model."""
    config = config_for(tiny_model_config, epochs=1, grad_accum=1, lr=5.0e-3, logging_steps=1)
    encoder = PromptEncoder(tokenizer, "direct")
    rows = [encoder.encode(d, s, 64) for d, s in ARTICLES] * 20  # 80 rows, 2 a step: 40 steps
    curves = []
    for trainer_class in (Trainer, labelled_logits_trainer()):
        trainer = build(config, tokenizer, tmp_path / trainer_class.__name__, trainer_class, rows)
        trainer.train()
        curves.append([log["loss"] for log in trainer.state.log_history if "loss" in log])
    plain, labelled = curves
    assert len(plain) == len(labelled) == 40
    assert plain[-1] < plain[0] - 0.2  # it learns: the curve has a shape to compare
    assert max(abs(a - b) for a, b in zip(plain, labelled)) < 1e-3


@pytest.mark.parametrize("architecture", ["tiny-phi", "tiny-llama"])
def test_right_padded_rows_train_the_same_without_the_padding_mask(tmp_path, tokenizer, tiny_model_config,
                                                                   architecture):
    """train.padding_mask false leaves the attention mask out: the same loss and gradients (labelled positions
    only see real tokens before them), while the pads' own logits do change (the mask really is gone)."""
    model_config = dataclasses.replace(tiny_model_config, name=str(ROOT / "models" / "configs" / architecture))
    config = config_for(model_config)
    encoder = PromptEncoder(tokenizer, "direct")
    rows = [encoder.encode(d, s, 128) for d, s in ARTICLES]
    batch = CompletionCollator(tokenizer.pad_token_id)(rows)
    mask = batch["attention_mask"]
    assert mask.sum(1).unique().numel() > 1 and (mask == 0).any()

    results, masks_seen = [], []
    for padding_mask in (True, False):
        trainer = build(config, tokenizer, tmp_path / str(padding_mask),
                        labelled_logits_trainer(dataclasses.replace(config.train, padding_mask=padding_mask)), rows)
        model = trainer.model
        inner = model.get_base_model().model  # the decoder stack: what the trainer's call reaches
        hook = inner.register_forward_pre_hook(lambda m, a, kw: masks_seen.append(kw.get("attention_mask")),
                                               with_kwargs=True)
        try:
            model.zero_grad()
            loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(37))
            loss.backward()
        finally:
            hook.remove()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    assert masks_seen[0] is not None and masks_seen[1] is None
    (masked_loss, masked_grads), (loss, grads) = results
    assert torch.allclose(loss, masked_loss, rtol=1e-5, atol=1e-6), (loss, masked_loss)
    for name in grads:
        assert torch.allclose(grads[name], masked_grads[name], rtol=1e-4, atol=1e-6), name
    model.eval()  # tiny-phi's residual dropout: two training-mode calls would differ by their random masks
    with torch.no_grad():
        masked = model(input_ids=batch["input_ids"], attention_mask=mask).logits
        unmasked = model(input_ids=batch["input_ids"]).logits
    real = mask.bool()
    torch.testing.assert_close(unmasked[real], masked[real], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(unmasked[~real], masked[~real], atol=1e-3)


def test_label_smoothing_smooths_the_training_loss_only(tmp_path, tokenizer, tiny_model_config):
    """train.label_smoothing: the training loss is the label-smoothed cross-entropy of the labelled positions
    ((1 - x) of the target's negative log-likelihood plus x of the mean over the vocabulary); evaluation
    keeps the plain loss."""
    encoder = PromptEncoder(tokenizer, "direct")
    rows = [encoder.encode(d, s, 128) for d, s in ARTICLES]
    batch = CompletionCollator(tokenizer.pad_token_id)(rows)
    # tiny-llama has no dropout: its training-mode logits are its evaluation-mode ones
    model_config = dataclasses.replace(tiny_model_config, name=str(ROOT / "models" / "configs" / "tiny-llama"))
    config = config_for(model_config, label_smoothing=0.1)
    trainer = build(config, tokenizer, tmp_path, labelled_logits_trainer(config.train), rows)
    model = trainer.model
    model.eval()  # the same logits for each call below
    with torch.no_grad():
        plain = trainer.compute_loss(model, dict(batch))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        model.train()
        smoothed = trainer.compute_loss(model, dict(batch))
    labels = batch["labels"][:, 1:]
    labelled = labels != -100
    log_probs = logits[labelled].log_softmax(-1)
    nll = -log_probs.gather(1, labels[labelled][:, None]).squeeze(1)
    expected = (0.9 * nll + 0.1 * -log_probs.mean(-1)).mean()
    torch.testing.assert_close(smoothed, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(plain, nll.mean(), rtol=1e-5, atol=1e-6)
    assert abs(float(expected - nll.mean())) > 1e-4  # far beyond the tolerance: the two losses are told apart


@pytest.mark.parametrize("padding_mask", [True, False])
def test_padding_to_a_multiple_trains_the_same(tmp_path, tokenizer, tiny_model_config, padding_mask):
    """train.pad_to_multiple_of: batches padded up to a multiple of it (labels ignored and mask off on the added
    pads), and the same loss and gradients as batches padded to their longest row, with and without the mask."""
    model_config = dataclasses.replace(tiny_model_config, name=str(ROOT / "models" / "configs" / "tiny-llama"))
    config = config_for(model_config, padding_mask=padding_mask, pad_to_multiple_of=64)
    encoder = PromptEncoder(tokenizer, "direct")
    rows = [encoder.encode(d, s, 128) for d, s in ARTICLES]
    tight = CompletionCollator(tokenizer.pad_token_id)(rows)
    padded = CompletionCollator(tokenizer.pad_token_id, 64)(rows)
    longest = max(len(row["input_ids"]) for row in rows)
    assert tight["input_ids"].shape[1] == longest and padded["input_ids"].shape[1] == -(-longest // 64) * 64 > longest
    extra = slice(longest, None)
    assert (padded["labels"][:, extra] == -100).all() and (padded["attention_mask"][:, extra] == 0).all()
    assert (padded["input_ids"][:, extra] == tokenizer.pad_token_id).all()
    for key in tight:
        assert torch.equal(padded[key][:, :longest], tight[key]), key

    trainer = build(config, tokenizer, tmp_path, labelled_logits_trainer(config.train), rows)
    model = trainer.model
    results = []
    for batch in (tight, padded):
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(37))
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    (loss, grads), (padded_loss, padded_grads) = results
    assert torch.allclose(padded_loss, loss, rtol=1e-5, atol=1e-6), (padded_loss, loss)
    for name in grads:
        assert torch.allclose(padded_grads[name], grads[name], rtol=1e-4, atol=1e-6), name
