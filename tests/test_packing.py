"""train.pack_tokens: articles packed end to end in fixed-size rows, each attending to itself only. The packs
hold every row once, every batch has one shape, and the loss and gradients are those of the unpacked batch."""
import dataclasses

import pytest
import torch

from conftest import ARTICLES as TRAINING_ARTICLES, ROOT, tiny, tiny_config
from xsumtune.data.tokenization import PromptEncoder
from xsumtune.model.loading import apply_lora, load_base_model
from xsumtune.train.packing import EpochPacks, PackedCollator, _halve_to, pack_rows
from xsumtune.train.training import (CompletionCollator, epoch_callbacks, labelled_logits_trainer, prepare_steps,
                                     train_adapter, training_arguments, training_sets)

ARTICLES = [*TRAINING_ARTICLES, ("A bus company has cut its evening services in three towns, blaming a shortage of "
                                 "drivers.", "Evening buses are being cut.")]


@pytest.fixture(scope="module")
def rows(tokenizer):
    encoder = PromptEncoder(tokenizer, "direct")
    return [encoder.encode(d, s, 128) for d, s in ARTICLES]


def test_packs_hold_every_row_once_within_their_tokens(rows):
    lengths = sorted(len(row["input_ids"]) for row in rows)
    budget = lengths[-1] + lengths[0]  # room for the longest with the shortest, never for all
    packs = pack_rows(rows, budget, seed=3)
    packed = [ids for pack in packs for ids in pack["input_ids"]]
    assert sorted(map(id, packed)) == sorted(id(row["input_ids"]) for row in rows)  # the rows' own lists, once each
    assert 1 < len(packs) < len(rows) and all(sum(map(len, pack["input_ids"])) <= budget for pack in packs)
    assert [p["input_ids"] for p in pack_rows(rows, budget, seed=3)] == [p["input_ids"] for p in packs]
    orders = {tuple(map(id, (ids for p in pack_rows(rows, budget, seed) for ids in p["input_ids"]))) for seed in range(6)}
    assert len(orders) > 1  # the seed shuffles
    with pytest.raises(ValueError, match=f"train.pack_tokens: a {lengths[-1]}-token row does not fit in"):
        pack_rows(rows, lengths[-1] - 1, seed=0)



def groupings(packs):
    return {frozenset(map(id, pack["input_ids"])) for pack in packs}


def test_each_epoch_packs_the_rows_anew_in_as_many_packs(rows):
    lengths = sorted(len(row["input_ids"]) for row in rows)
    packs = EpochPacks(rows, lengths[-1] + lengths[0], seed=3, epochs=3.0)  # train.epochs is a float
    epochs = []
    for epoch in range(3):
        packs.set_epoch(epoch)
        epochs.append([packs[i] for i in range(len(packs))])
        held = [ids for pack in epochs[-1] for ids in pack["input_ids"]]
        assert sorted(map(id, held)) == sorted(id(row["input_ids"]) for row in rows)
    assert len({frozenset(groupings(epoch)) for epoch in epochs}) == 3  # other articles share a step each epoch
    assert groupings(epochs[0]) == groupings(pack_rows(rows, lengths[-1] + lengths[0], seed=3))
    assert packs.every_pack() == [pack for epoch in epochs for pack in epoch]
    packs.set_epoch(4)  # past the last, the epochs repeat
    assert [packs[i] for i in range(len(packs))] == epochs[1]
    again = EpochPacks(rows, lengths[-1] + lengths[0], seed=3, epochs=3)
    assert [groupings(again.by_epoch[e]) for e in range(3)] == [groupings(epoch) for epoch in epochs]



def test_the_epoch_callback_sets_the_epoch_begun(rows):
    from transformers import TrainerState

    packs = EpochPacks(rows, 2 * max(len(row["input_ids"]) for row in rows), seed=0, epochs=3)
    (callback,) = epoch_callbacks(packs)
    for done, epoch in ((0.0, 0), (1.0, 1), (1.5, 1), (2.0, 2)):  # 1.5: resumed halfway through the second epoch
        callback.on_epoch_begin(None, TrainerState(epoch=done), None)
        assert packs.epoch == epoch
    assert epoch_callbacks([{"input_ids": [1], "labels": [1]}]) == []

def test_an_epoch_with_fewer_packs_halves_its_fullest(rows):
    packs = pack_rows(rows, sum(len(row["input_ids"]) for row in rows), seed=0)  # one pack of every row
    halved = _halve_to(packs, 3)
    sizes = [len(pack["input_ids"]) for pack in halved]
    assert len(sizes) == 3 and min(sizes) >= len(rows) // 4 and max(sizes) <= -(-len(rows) // 2)
    assert [ids for pack in halved for ids in pack["input_ids"]] == packs[0]["input_ids"]
    assert all(len(pack["labels"]) == len(pack["input_ids"]) for pack in halved)

def test_collator_lays_out_segments_in_one_shape(tokenizer, rows):
    budget = 3 * max(len(row["input_ids"]) for row in rows)
    packs = pack_rows(rows, budget, seed=0)
    collator = PackedCollator(tokenizer.pad_token_id, budget, packs)
    longest = max(len(row["input_ids"]) for row in rows)
    assert collator.longest == longest and collator.slots == max(len(p["input_ids"]) for p in packs) + 3
    batches = [collator([pack]) for pack in packs]
    assert {tuple(b["input_ids"].shape) for b in batches} == {(1, budget)}
    assert {tuple(b["cu_seqlens"].shape) for b in batches} == {(collator.slots + 1,)}
    for pack, batch in zip(packs, batches):
        bounds = batch["cu_seqlens"].tolist()
        assert bounds[0] == 0 and bounds[-1] == budget and bounds == sorted(bounds)
        for index, (ids, labels) in enumerate(zip(pack["input_ids"], pack["labels"])):
            start, stop = bounds[index], bounds[index + 1]
            assert batch["input_ids"][0, start:stop].tolist() == ids and batch["labels"][0, start:stop].tolist() == labels
            assert batch["position_ids"][0, start:stop].tolist() == list(range(len(ids)))
        tail = bounds[len(pack["input_ids"]):]
        assert all(0 <= b - a <= longest for a, b in zip(tail, tail[1:]))  # pads in pieces, then empty segments
        assert (batch["labels"][0, tail[0]:] == -100).all() and (batch["input_ids"][0, tail[0]:] == tokenizer.pad_token_id).all()
    two = collator(packs[:2])  # two packs a step: one flattened row of segments
    assert two["input_ids"].shape == (2, budget) and two["cu_seqlens"][collator.slots] == budget


def config_for(model_config, **train):
    defaults = dict(epochs=1, batch_size=1, grad_accum=1, lr=1.0e-2, warmup_steps=0, logging_steps=1,
                    save_steps=1000, optimizer="adamw_torch", gradient_checkpointing=False, group_by_length=False)
    return tiny_config(model=model_config, lora=tiny("lora", dropout=0.0), train=tiny("train", **{**defaults, **train}))


@pytest.mark.parametrize("architecture", ["tiny-phi", "tiny-llama"])
def test_packed_rows_train_the_same_as_padded_ones(tmp_path, tokenizer, tiny_model_config, rows, architecture):
    """Every row in one pack: the loss and gradients of the padded batch of the same rows (each article sees only
    itself, from position 0), while attention across the segments would change them (the segments really count)."""
    model_config = dataclasses.replace(tiny_model_config, name=str(ROOT / "models" / "configs" / architecture))
    budget = sum(len(row["input_ids"]) for row in rows) + 40
    config = config_for(model_config, pack_tokens=budget)
    (pack,) = pack_rows(rows, budget, config.seed)
    order = [next(r for r in rows if r["input_ids"] is ids) for ids in pack["input_ids"]]
    padded = CompletionCollator(tokenizer.pad_token_id)(order)
    results = []
    for packing in (False, True):
        run = config if packing else dataclasses.replace(config, train=dataclasses.replace(config.train, pack_tokens=None))
        model = apply_lora(load_base_model(run.model, run.seed), run.lora, run.seed).eval()  # no dropout: same draws
        collator = prepare_steps(run, model, tokenizer.pad_token_id, [pack])
        trainer = labelled_logits_trainer(run.train)(model=model, args=training_arguments(run, str(tmp_path / str(packing))),
                                                     train_dataset=[pack], eval_dataset=[pack], data_collator=collator)
        batch = collator([pack]) if packing else dict(padded)
        model.zero_grad()
        loss, outputs = trainer.compute_loss(model, batch, return_outputs=True, num_items_in_batch=torch.tensor(37))
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
        if packing:  # one segment for the whole row: each article would see the ones before it
            whole = dict(batch, cu_seqlens=torch.tensor([0] + [budget] * (len(batch["cu_seqlens"]) - 1), dtype=torch.int32))
            with torch.no_grad():
                _, mixed = trainer.compute_loss(model, whole, return_outputs=True, num_items_in_batch=torch.tensor(37))
    (loss, grads), (packed_loss, packed_grads) = results
    torch.testing.assert_close(packed_loss, loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == packed_grads.keys()
    for name in grads:
        torch.testing.assert_close(packed_grads[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)
    assert (mixed.logits - outputs.logits).abs().max() > 1e-2  # the labelled positions' logits


def test_packed_training_runs_through_the_stage(tmp_path, tokenizer, tiny_model_config, rows):
    """train_adapter with pack_tokens: packs of the training rows, the evaluation rows packed too, one batch shape."""
    budget = 2 * max(len(row["input_ids"]) for row in rows)
    config = config_for(tiny_model_config, epochs=2.0, pack_tokens=budget)
    packs = training_sets(config, rows, config.train.epochs)
    assert 1 < len(packs) < len(rows)
    model = apply_lora(load_base_model(config.model, config.seed), config.lora, config.seed)
    shapes, seen = [], []

    def record(collator):
        def collate(examples):
            batch = collator(examples)
            shapes.append((tuple(batch["input_ids"].shape), tuple(batch["cu_seqlens"].shape)))
            seen.extend(examples)
            return batch
        return collate

    metrics = train_adapter(config, model, tokenizer, rows, rows[:2], str(tmp_path / "adapter"), str(tmp_path / "live"),
                            str(tmp_path / "checkpoints"), wrap_collator=record)
    assert metrics["train_steps"] == 2 * len(packs) and metrics["eval_perplexity"] > 1
    assert len(set(shapes)) == 1 and shapes[0][0] == (1, budget)
    trained = groupings(seen) - groupings(training_sets(config, rows[:2]).every_pack())  # the evaluation pack aside
    assert trained == groupings(packs.by_epoch[0]) | groupings(packs.by_epoch[1]) and len(trained) > len(packs)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
