"""Batched left-padded greedy generation equals one-at-a-time generation, and keeps each id's output."""
import random

import pytest
import torch

from xsumtune.generation import decode_new_tokens, generate_summaries, left_pad, plan_batches
from xsumtune.modeling import apply_lora, load_base_model
from xsumtune.config import LoraConfig
from xsumtune.data import Report, load_split
from xsumtune.tokenization import PromptEncoder
from conftest import ROOT


@pytest.fixture(scope="module")
def prompts(tokenizer):
    rows = load_split(str(ROOT / "data" / "sample"), "test", "error", Report())[:12]
    encoder = PromptEncoder(tokenizer, "direct")
    # lengths from ~30 to 300 tokens, so batches carry real left padding
    return [{"id": row["id"], "prompt_ids": encoder.encode_prompt(row["document"], 30 + 25 * i)[0]}
            for i, row in enumerate(rows)]


@pytest.fixture(scope="module")
def model():
    from conftest import TINY_CONFIG_DIR, TOKENIZER_DIR
    from xsumtune.config import ModelConfig

    config = ModelConfig(name=str(TINY_CONFIG_DIR), weights="random", tokenizer=str(TOKENIZER_DIR), dtype="float32")
    model = apply_lora(load_base_model(config, 3), LoraConfig(), 3)
    with torch.no_grad():  # a trained-looking adapter: B is zero at init, which would hide LoRA
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return model.eval()


def test_left_pad_puts_padding_on_the_left():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_batched_equals_one_at_a_time(model, tokenizer, prompts):
    batched = generate_summaries(model, tokenizer, prompts, batch_size=6, max_new_tokens=20)
    single = generate_summaries(model, tokenizer, prompts, batch_size=1, max_new_tokens=20)
    assert [g.id for g in batched] == [p["id"] for p in prompts]
    assert batched == single
    assert all(g.error is None and g.tokens == 20 and g.stopped_by_cap for g in batched)


def test_batch_composition_never_moves_a_summary_to_another_article(model, tokenizer, prompts):
    reference = {g.id: g for g in generate_summaries(model, tokenizer, prompts, batch_size=4, max_new_tokens=12)}
    shuffled = prompts[:]
    random.Random(0).shuffle(shuffled)
    for batch_size in (3, 5):
        for g in generate_summaries(model, tokenizer, shuffled, batch_size=batch_size, max_new_tokens=12):
            assert g == reference[g.id]


def test_failed_article_is_recorded_not_dropped(model, tokenizer, prompts):
    broken = prompts[:3] + [{"id": "bad", "prompt_ids": [11, 60000]}]  # a token id past the embedding
    results = generate_summaries(model, tokenizer, broken, batch_size=4, max_new_tokens=5)
    assert [g.id for g in results] == [p["id"] for p in broken]
    assert results[-1].error and results[-1].prediction == ""
    assert all(g.error is None for g in results[:3])


def test_decode_stops_at_eos_and_first_newline(tokenizer):
    eos = tokenizer.eos_token_id
    ids = tokenizer(" A council met.\nMore text", add_special_tokens=False)["input_ids"]
    assert decode_new_tokens(tokenizer, ids + [eos, 99], eos, 60) == ("A council met.", len(ids), False)
    assert decode_new_tokens(tokenizer, ids, eos, len(ids)) == ("A council met.", len(ids), True)


@pytest.mark.parametrize("budget", [None, 700, 2000])
def test_plan_batches_covers_every_article_once_within_budget(budget):
    lengths = [random.Random(i).randint(20, 600) for i in range(50)]
    batches = plan_batches(lengths, batch_size=8, token_budget=budget, max_new_tokens=60, sort_by_length=True)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(50))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    for batch in batches:
        assert len(batch) <= 8
        if budget is not None and len(batch) > 1:
            assert len(batch) * (max(lengths[i] for i in batch) + 60) <= budget
    unsorted = plan_batches(lengths, batch_size=8, token_budget=None, max_new_tokens=60, sort_by_length=False)
    assert [i for batch in unsorted for i in batch] == list(range(50))


def test_fast_path_equals_plain_path_token_for_token(model, tokenizer, prompts):
    """Sorted, token-budget batches, a static KV cache and a merged adapter change speed, not outputs."""
    import copy

    plain = generate_summaries(model, tokenizer, prompts, batch_size=4, max_new_tokens=16)
    merged = copy.deepcopy(model).merge_and_unload().eval()
    fast = generate_summaries(merged, tokenizer, prompts, batch_size=8, max_new_tokens=16, token_budget=1200,
                              sort_by_length=True, cache_implementation="static")
    assert [g.id for g in fast] == [p["id"] for p in prompts]
    assert [g.token_ids for g in fast] == [g.token_ids for g in plain]
    assert all(len(g.token_ids) == 16 for g in fast)


def test_generation_stops_once_every_sequence_has_ended(tokenizer):
    from conftest import TINY_CONFIG_DIR, TOKENIZER_DIR
    from xsumtune.config import ModelConfig
    from xsumtune.generation import generate_batch

    base = load_base_model(ModelConfig(name=str(TINY_CONFIG_DIR), weights="random", tokenizer=str(TOKENIZER_DIR),
                                       dtype="float32"), 0).eval()
    with torch.no_grad():  # eos becomes every step's most likely token
        base.lm_head.bias = torch.nn.Parameter(torch.zeros(base.config.vocab_size))
        base.lm_head.bias[tokenizer.eos_token_id] = 1e4
    prompts = [{"id": "a", "prompt_ids": [11, 12, 13]}, {"id": "b", "prompt_ids": [14]}]
    assert generate_batch(base, tokenizer, [p["prompt_ids"] for p in prompts], max_new_tokens=60) == \
        [[tokenizer.eos_token_id]] * 2  # one step, not 60
    results = generate_summaries(base, tokenizer, prompts, batch_size=2, max_new_tokens=60)
    assert [(g.prediction, g.tokens, g.stopped_by_cap) for g in results] == [("", 0, False)] * 2
