"""Batched left-padded greedy generation equals one-at-a-time generation, and keeps each id's output."""
import random

import pytest
import torch

from xsumtune.generate.generation import (LineEnd, decode_new_tokens, first_line_with_text, generate_batch, generate_summaries,
                                 left_pad, line_ended, plan_batches)
from xsumtune.generate.lines import line_tables
from xsumtune.model.loading import apply_lora, load_base_model
from xsumtune.data.sources import Report, load_split
from xsumtune.data.tokenization import PromptEncoder
from conftest import ROOT, tiny


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

    config = tiny("model", name=str(TINY_CONFIG_DIR), weights="random", tokenizer=str(TOKENIZER_DIR), dtype="float32")
    model = apply_lora(load_base_model(config, 3), tiny("lora"), 3)
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


@pytest.mark.parametrize("cache", [{}, {"cache_implementation": "graphs"}], ids=["generate", "graphs"])
def test_failed_article_is_recorded_not_dropped(model, tokenizer, prompts, cache):
    """Alone in its batch, or with others; in the last batch, or in one read back after the next is launched."""
    bad = {"id": "bad", "prompt_ids": [11, 60000]}  # a token id past the embedding
    expected = {g.id: g for g in generate_summaries(model, tokenizer, prompts[:3], batch_size=4, max_new_tokens=5,
                                                    **cache)}
    for broken, batch_size in ((prompts[:3] + [bad], 4), ([bad] + prompts[:3], 2), (prompts[:2] + [bad] + prompts[2:3], 1)):
        results = generate_summaries(model, tokenizer, broken, batch_size=batch_size, max_new_tokens=5, **cache)
        assert [g.id for g in results] == [p["id"] for p in broken]
        for g in results:
            assert (g.error and g.prediction == "") if g.id == "bad" else g == expected[g.id]


def test_decode_keeps_the_first_line_with_text_before_eos(tokenizer):
    eos = tokenizer.eos_token_id

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    line = ids(" A council met.\nMore text")
    assert decode_new_tokens(tokenizer, line + [eos, 99], eos, 60) == ("A council met.", len(line), False, False)
    # the line ended before the cap: complete, not cut by it
    assert decode_new_tokens(tokenizer, line, eos, len(line)) == ("A council met.", len(line), False, False)
    cut = ids(" A council met")
    assert decode_new_tokens(tokenizer, cut, eos, len(cut)) == ("A council met", len(cut), True, False)
    # an instruct model's answer to `Summary:`: a line break first, the summary after it
    late = ids("\n \n A council met.\nMore text")
    assert decode_new_tokens(tokenizer, late + [eos], eos, 60) == ("A council met.", len(late), False, True)
    blank = ids("\n\n  \n")
    assert decode_new_tokens(tokenizer, blank, eos, len(blank)) == ("", len(blank), True, True)
    assert first_line_with_text(" \n\t\nFirst.\nSecond.") == "First." and first_line_with_text(" \n ") == ""


@pytest.mark.parametrize("tokenizer_dir", ["phi-2", "smollm2"])
def test_line_end_stops_each_row_at_the_newline_after_its_first_text(tokenizer_dir):
    """Fed token by token, LineEnd fires first exactly where the decoded text first has a finished line."""
    from conftest import ROOT
    from xsumtune.data.tokenization import load_tokenizer

    tokenizer = load_tokenizer(str(ROOT / "models" / "tokenizers" / tokenizer_dir))
    texts = ["\n\nA council met.\nMore text.\n\n", "A council met.\n\nMore", " \n  \n\tStorms hit.\n", "No newline at all",
             "\n\n\n", "Ends. \n", "x\ny"]
    rows = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    width = max(map(len, rows))
    pad = tokenizer.eos_token_id
    ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    prompt = torch.full((len(rows), 3), pad)  # what generate passes: the prompt, then each new token
    criterion = LineEnd(line_tables(tokenizer), torch.device("cpu"))
    first_stop = [None] * len(rows)
    for step in range(width):
        done = criterion(torch.cat([prompt, ids[:, :step + 1]], dim=1), None)
        for row in range(len(rows)):
            if done[row] and first_stop[row] is None:
                first_stop[row] = step
    expected = [next((k for k in range(len(row)) if line_ended(tokenizer.decode(row[:k + 1]))), None) for row in rows]
    assert first_stop == expected
    assert None in expected and sum(stop is not None for stop in expected) >= 5  # both kinds of row are here


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
    from xsumtune.generate.generation import generate_batch

    base = load_base_model(tiny("model", name=str(TINY_CONFIG_DIR), weights="random", tokenizer=str(TOKENIZER_DIR),
                                       dtype="float32"), 0).eval()
    with torch.no_grad():  # eos becomes every step's most likely token
        base.lm_head.bias = torch.nn.Parameter(torch.zeros(base.config.vocab_size))
        base.lm_head.bias[tokenizer.eos_token_id] = 1e4
    prompts = [{"id": "a", "prompt_ids": [11, 12, 13]}, {"id": "b", "prompt_ids": [14]}]
    assert generate_batch(base, tokenizer, [p["prompt_ids"] for p in prompts], max_new_tokens=60) == \
        [[tokenizer.eos_token_id]] * 2  # one step, not 60
    results = generate_summaries(base, tokenizer, prompts, batch_size=2, max_new_tokens=60)
    assert [(g.prediction, g.tokens, g.stopped_by_cap) for g in results] == [("", 0, False)] * 2
    # generate.min_new_tokens: 1 (the default) takes the first token from the rest; eos comes next
    results = generate_summaries(base, tokenizer, prompts, batch_size=2, max_new_tokens=60, min_new_tokens=1)
    assert [(g.tokens, g.stopped_by_cap) for g in results] == [(1, False)] * 2
    assert all(g.token_ids[0] != tokenizer.eos_token_id for g in results)


class ForceTokens:
    """A logits processor that forces chosen tokens at chosen steps of each prompt's generation; the model
    picks the rest. Prompts are told apart by their first token, so batching and order can't mix them up."""

    def __init__(self, prompts: list[list[int]], schedules: list[dict[int, int]], pad: int):
        self.by_first = {p[0]: (len(p), schedule) for p, schedule in zip(prompts, schedules, strict=True)}
        self.pad = pad

    def __call__(self, input_ids, scores):
        for row, ids in enumerate(input_ids.tolist()):
            start = next(i for i, token in enumerate(ids) if token != self.pad)  # left padding ends here
            length, schedule = self.by_first[ids[start]]
            token = schedule.get(len(ids) - start - length)
            if token is not None:
                scores[row] = float("-inf")
                scores[row, token] = 0.0
        return scores


@pytest.fixture(scope="module")
def newline_cases(tokenizer, prompts):
    """Six prompts whose generations end their first line at known steps: model text, then newlines where
    the schedule puts them. max_new_tokens 10."""
    from transformers import LogitsProcessorList

    newline, space, eos = 198, 220, tokenizer.eos_token_id
    assert tokenizer.decode([newline]) == "\n" and tokenizer.decode([space]) == " "
    schedules = [
        {},                                             # no newline: runs to the cap
        {3: newline},                                   # three tokens of text, then the line ends
        {0: newline, 1: newline, 4: newline},           # blank lines first, text, then the line ends
        {step: newline for step in range(10)},          # nothing but newlines: cut by the cap, empty
        {2: eos},                                       # ends by eos before any newline
        {0: space, 1: newline, 5: newline, 6: newline},  # a whitespace-only first line
    ]
    # each prompt's end (the template's tail), of several lengths: batches carry left padding
    cases = [{"id": f"case-{i}", "prompt_ids": [1000 + i] + p["prompt_ids"][-(8 + 6 * i):]}
             for i, p in enumerate(prompts[:6])]
    force = ForceTokens([c["prompt_ids"] for c in cases], schedules, eos)
    return cases, LogitsProcessorList([force])


def test_stopping_at_the_line_end_equals_generating_to_the_cap_and_cutting(model, tokenizer, newline_cases):
    cases, force = newline_cases
    options = dict(max_new_tokens=10, logits_processor=force)
    to_cap = generate_summaries(model, tokenizer, cases, batch_size=3, stop_at_line_end=False, **options)
    batched = generate_summaries(model, tokenizer, cases, batch_size=3, **options)
    single = generate_summaries(model, tokenizer, cases, batch_size=1, **options)
    static = generate_summaries(model, tokenizer, cases, batch_size=6, token_budget=100, sort_by_length=True,
                                cache_implementation="static", **options)
    assert batched == single == static
    assert [g.prediction for g in batched] == [g.prediction for g in to_cap]
    assert [g.leading_newline for g in batched] == [g.leading_newline for g in to_cap] == \
        [False, False, True, True, False, True]
    for stopped, full in zip(batched, to_cap):
        # token for token up to the stop, which is the first token that finishes a line with text
        assert stopped.token_ids == full.token_ids[:stopped.tokens]
        if stopped.tokens < full.tokens:
            assert line_ended(tokenizer.decode(stopped.token_ids))
            assert not line_ended(tokenizer.decode(stopped.token_ids[:-1]))
    assert [g.tokens for g in batched] == [10, 4, 5, 10, 2, 6]
    assert [g.stopped_by_cap for g in batched] == [True, False, False, True, False, False]
    assert [g.stopped_by_cap for g in to_cap] == [True, False, False, True, False, False]
    assert all(g.prediction for i, g in enumerate(batched) if i != 3) and batched[3].prediction == ""
    assert sum(g.tokens for g in batched) < sum(g.tokens for g in to_cap)


def test_a_batch_stops_once_every_row_has_ended_its_line(model, tokenizer, newline_cases):
    cases, force = newline_cases
    prompts = [cases[i]["prompt_ids"] for i in (1, 2, 5)]  # lines end after 4, 5 and 6 tokens
    assert [len(out) for out in generate_batch(model, tokenizer, prompts, max_new_tokens=10,
                                               logits_processor=force)] == [6] * 3
    assert [len(out) for out in generate_batch(model, tokenizer, prompts, max_new_tokens=10, logits_processor=force,
                                               stop_at_line_end=False)] == [10] * 3


def test_static_cache_is_sized_to_each_batch(model, tokenizer, prompts):
    """generate alone would size every cache to the longest it has made on this model (the first batch's)."""
    caches = []

    def record(module, args, kwargs, output):
        cache = kwargs.get("past_key_values")
        if cache is not None and not any(cache is seen for seen in caches):
            caches.append(cache)

    handle = model.get_base_model().register_forward_hook(record, with_kwargs=True)
    try:  # outputs equal the dynamic cache's: test_fast_path_equals_plain_path_token_for_token
        generate_summaries(model, tokenizer, prompts, batch_size=6, max_new_tokens=8, token_budget=1000,
                           sort_by_length=True, cache_implementation="static")
    finally:
        handle.remove()
    lengths = [len(p["prompt_ids"]) for p in prompts]
    plan = plan_batches(lengths, batch_size=6, token_budget=1000, max_new_tokens=8, sort_by_length=True)
    planned = [(len(batch), max(lengths[i] for i in batch) + 8) for batch in plan]
    assert len(set(width for _, width in planned)) > 2  # batches of several widths
    assert [(c.layers[0].keys.shape[0], c.layers[0].keys.shape[2]) for c in caches] == planned


def test_plan_of_the_whole_xsum_test_set_keeps_each_batch_within_the_token_budget(tmp_path):
    """The phi2 profile's settings on 11,334 articles of the sample's length distribution: every batch's
    rows x (longest prompt + max_new_tokens), the cache's size, stays within generate.token_budget."""
    import numpy as np

    from conftest import compose_params
    from xsumtune.config import load_config
    from xsumtune.generate.systems import build_prompts
    from xsumtune.data.tokenization import load_tokenizer

    config = load_config(compose_params(tmp_path / "params.yaml", "phi2"))
    e = config.generate
    tokenizer = load_tokenizer(str(ROOT / "models" / "tokenizers" / "phi-2"))
    rows = load_split(str(ROOT / "data" / "sample"), "test", "error", Report())
    sample = [len(p["prompt_ids"]) for p in build_prompts(config, tokenizer, rows)]
    assert max(sample) == config.prompt.max_seq_len - e.max_new_tokens  # the long articles are cut to fit
    lengths = np.random.default_rng(0).choice(sample, size=11_334).tolist()
    batches = plan_batches(lengths, batch_size=e.batch_size, token_budget=e.token_budget,
                           max_new_tokens=e.max_new_tokens, sort_by_length=e.sort_by_length)
    assert sorted(i for batch in batches for i in batch) == list(range(11_334))
    for batch in batches:
        assert len(batch) <= e.batch_size
        assert len(batch) * (max(lengths[i] for i in batch) + e.max_new_tokens) <= e.token_budget


def test_generation_without_cudnn_attention_keeps_every_token_and_turns_cudnn_off(model, tokenizer, prompts):
    """generate.cudnn_attention: false excludes cuDNN's SDPA kernel while generating (seen from inside the
    forward pass) and changes nothing on a CPU, which has no cuDNN kernel; the flag is restored after."""
    seen = []
    hook = model.get_input_embeddings().register_forward_pre_hook(
        lambda *_: seen.append(torch.backends.cuda.cudnn_sdp_enabled()))
    try:
        before = torch.backends.cuda.cudnn_sdp_enabled()
        plain = generate_summaries(model, tokenizer, prompts, batch_size=6, max_new_tokens=10)
        assert seen and all(flag == before for flag in seen)
        seen.clear()
        without = generate_summaries(model, tokenizer, prompts, batch_size=6, max_new_tokens=10, cudnn_attention=False)
        assert seen and not any(seen)
        assert torch.backends.cuda.cudnn_sdp_enabled() == before
    finally:
        hook.remove()
    assert without == plain


@pytest.fixture(scope="module")
def grouped_model():
    """A tiny Llama with grouped-query attention (4 query heads on 2 key/value heads), random float32 weights."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from conftest import TINY_CONFIG_DIR

    config = AutoConfig.from_pretrained(TINY_CONFIG_DIR.parent / "tiny-llama", num_key_value_heads=2,
                                        attn_implementation="sdpa")
    torch.manual_seed(5)
    return AutoModelForCausalLM.from_config(config).eval()


def longest_first_batch(tokenizer, rows: int, first: int, step: int):
    """The first test articles' prompts cut to first + step x i tokens, longest first, and left-padded: (prompt
    ids, input_ids, attention_mask), as the stage's sorted batches come."""
    encoder = PromptEncoder(tokenizer, "direct")
    articles = load_split(str(ROOT / "data" / "sample"), "test", "error", Report())[:rows]
    ids = sorted((encoder.encode_prompt(row["document"], first + step * i)[0] for i, row in enumerate(articles)),
                 key=len, reverse=True)
    return (ids, *left_pad(ids, tokenizer.eos_token_id))


class NewlineAt:
    """Hooks that make the model write a newline where a row's position + 1 is a multiple of `every`: rows of
    other prompt lengths end their line at other steps, some not within the cap."""

    def __init__(self, model, every: int):
        self.every, self.positions = every, None
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft's generate calls it
        self.handles = [inner.register_forward_pre_hook(self.take_positions, with_kwargs=True),
                        model.get_output_embeddings().register_forward_hook(self.favour_newline)]

    def take_positions(self, module, args, kwargs):
        self.positions = kwargs["position_ids"]

    def favour_newline(self, module, inputs, logits):
        newline = ((self.positions[:, -logits.shape[1]:] + 1) % self.every == 0).to(logits.dtype)
        logits = logits.clone()
        logits[..., 198] += 1e3 * newline
        return logits

    def remove(self):
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize("which", ["lora", "grouped"])
def test_graph_decoding_equals_generate_token_for_token(which, model, grouped_model, tokenizer, prompts):
    """generate.cache: graphs (the project's greedy loop) makes generate's tokens: with min_new_tokens, eos, line
    ends and the cap, on an unmerged LoRA model and on grouped-query attention."""
    subject = model if which == "lora" else grouped_model
    options = dict(batch_size=5, max_new_tokens=16, min_new_tokens=1, sort_by_length=True)
    for every in (None, 23):  # 23: most rows end their line within the cap, each at its own step
        hooks = NewlineAt(subject, every) if every else None
        try:
            static = generate_summaries(subject, tokenizer, prompts, cache_implementation="static", **options)
            graphs = generate_summaries(subject, tokenizer, prompts, cache_implementation="graphs", **options)
        finally:
            if hooks:
                hooks.remove()
        assert [g.error for g in graphs] == [None] * len(prompts)
        assert graphs == static
        capped = sum(g.stopped_by_cap for g in graphs)
        assert capped == len(prompts) if not every else 0 < capped < len(prompts) / 2
        if every:
            assert len({g.tokens for g in graphs}) > 4


@pytest.mark.parametrize("which", ["lora", "grouped"])
def test_dropping_finished_rows_keeps_every_token(which, model, grouped_model, tokenizer, prompts):
    """Rows that end their line leave the batch at the next check (the model then runs on fewer rows), and
    every row's tokens stay generate's."""
    from xsumtune.generate.graphs import greedy_decode

    subject = model if which == "lora" else grouped_model
    ids = [p["prompt_ids"] for p in prompts]
    input_ids, attention_mask = left_pad(ids, tokenizer.eos_token_id)
    rows_seen = []
    hooks = NewlineAt(subject, 13)  # each prompt length ends its line at its own step, within 26 steps
    counter = subject.get_output_embeddings().register_forward_hook(lambda m, i, out: rows_seen.append(out.shape[0]))
    try:
        dropped = greedy_decode(subject, input_ids, attention_mask, max_new_tokens=40, min_new_tokens=1,
                                eos_token_id=tokenizer.eos_token_id, line_tables=line_tables(tokenizer), min_rows=1)
        kept = greedy_decode(subject, input_ids, attention_mask, max_new_tokens=40, min_new_tokens=1,
                             eos_token_id=tokenizer.eos_token_id, line_tables=line_tables(tokenizer), drop_below=0)
        static = generate_batch(subject, tokenizer, ids, max_new_tokens=40, min_new_tokens=1,
                                cache_implementation="static")
    finally:
        hooks.remove()
        counter.remove()
    eos = tokenizer.eos_token_id
    padded = [row + [eos] * (40 - len(row)) for row in static]
    assert [row + [eos] * (40 - len(row)) for row in dropped.tolist()] == padded
    assert [row + [eos] * (40 - len(row)) for row in kept.tolist()] == padded
    assert len({row.index(eos) if eos in row else 40 for row in padded}) > 4  # rows end at many steps
    sizes = list(dict.fromkeys(rows_seen))
    assert sizes[0] == len(prompts) and len(sizes) >= 2 and sizes == sorted(sizes, reverse=True)


def test_the_graphs_loop_hands_the_host_its_wait_once_the_prefill_is_queued(model, tokenizer, prompts):
    """while_running runs once a batch, after the prefill and before the first check of the rows (the host's
    first wait), however many steps; generate_summaries reads the batch before back there, and each batch's
    summaries stay its own."""
    from xsumtune.generate.graphs import greedy_decode

    input_ids, attention_mask = left_pad([p["prompt_ids"] for p in prompts[:3]], tokenizer.eos_token_id)
    for steps in (3, 20):
        calls, heads = [], []
        hook = model.get_output_embeddings().register_forward_hook(lambda m, i, out: heads.append(out.shape[1]))
        try:
            greedy_decode(model, input_ids, attention_mask, max_new_tokens=steps, eos_token_id=tokenizer.eos_token_id,
                          check_every=8, while_running=lambda: calls.append(len(heads)))
        finally:
            hook.remove()
        assert calls == [min(steps, 8)]  # the prefill and the steps before the first check, then once only
    read = []
    alone = generate_summaries(model, tokenizer, prompts, batch_size=len(prompts), max_new_tokens=6,
                               cache_implementation="graphs")
    batched = generate_summaries(model, tokenizer, prompts, batch_size=2, max_new_tokens=6,
                                 cache_implementation="graphs", on_batch=lambda g: read.append([x.id for x in g]))
    assert batched == alone and sum(read, []) == [p["id"] for p in prompts] and len(read) > 2


def test_graph_decoding_stops_at_eos_and_takes_no_option_it_would_ignore(tokenizer):
    from conftest import tiny_random_model

    base = tiny_random_model(0)
    with torch.no_grad():  # eos becomes every step's most likely token
        base.lm_head.bias[tokenizer.eos_token_id] = 1e4
    prompts = [{"id": "a", "prompt_ids": [11, 12, 13]}, {"id": "b", "prompt_ids": [14]}]
    results = generate_summaries(base, tokenizer, prompts, batch_size=2, max_new_tokens=60, min_new_tokens=1,
                                 cache_implementation="graphs")
    assert [(g.tokens, g.stopped_by_cap) for g in results] == [(1, False)] * 2  # one token, then eos
    out = generate_batch(base, tokenizer, [p["prompt_ids"] for p in prompts], max_new_tokens=60,
                         cache_implementation="graphs")
    assert out == [[tokenizer.eos_token_id] * 8] * 2  # the host looks every 8 steps: 8, not 60
    with pytest.raises(ValueError, match="takes no no_repeat_ngram_size"):
        generate_batch(base, tokenizer, [[11]], max_new_tokens=4, cache_implementation="graphs",
                       no_repeat_ngram_size=3)


@pytest.mark.parametrize("heads", [6, 2])  # grouped-query (3 query heads a key/value head), and multi-head
def test_grouped_decode_attention_equals_sdpa_with_repeated_heads(heads):
    from types import SimpleNamespace
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from xsumtune.generate.graphs import grouped_decode_attention

    torch.manual_seed(0)
    query, key, value = torch.randn(3, heads, 1, 8), torch.randn(3, 2, 10, 8), torch.randn(3, 2, 10, 8)
    mask = torch.rand(3, 1, 1, 10) > 0.3
    mask[:, :, :, 0] = True
    module = SimpleNamespace(num_key_value_groups=heads // 2, is_causal=True)
    grouped, _ = grouped_decode_attention(module, query, key, value, mask, scaling=0.3)
    plain, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.3)
    assert grouped.shape == plain.shape == (3, 1, heads, 8)
    torch.testing.assert_close(grouped, plain)


def test_graphs_decode_greedily_and_hand_other_modes_to_generate_with_the_static_cache():
    """generate.cache: graphs is the default profiles': `-S generate.num_beams=4` (or sampling, trigram blocking,
    MBR) must still run, with transformers' generate over the static cache."""
    import dataclasses
    from xsumtune.generate.systems import decoding_options

    graphs = tiny("generate", cache="graphs")
    assert decoding_options(graphs)["cache_implementation"] == "graphs"
    for change in (dict(num_beams=4, length_penalty=0.8), dict(do_sample=True, temperature=0.7),
                   dict(no_repeat_ngram_size=3), dict(do_sample=True, mbr_candidates=4)):
        assert decoding_options(dataclasses.replace(graphs, **change))["cache_implementation"] == "static"
    assert "cache_implementation" not in decoding_options(tiny("generate", cache="dynamic"))


@pytest.mark.parametrize("budget", [1, 700, 2500, 10**9])
def test_prefill_groups_hold_every_row_once_longest_first_within_the_budget(budget):
    from xsumtune.generate.graphs import prefill_groups

    lengths = [random.Random(7).randint(20, 600) for _ in range(40)]
    groups = prefill_groups(lengths, budget)
    assert sorted(row for group in groups for row in group) == list(range(40))
    order = [lengths[row] for group in groups for row in group]
    assert order == sorted(lengths, reverse=True)
    assert all(len(group) == 1 or len(group) * lengths[group[0]] <= budget for group in groups)
    assert len(groups) == {1: 40, 10**9: 1}.get(budget, len(groups)) and (budget in (1, 10**9) or len(groups) > 2)
    assert prefill_groups(lengths, None) == [list(range(40))]


@pytest.mark.parametrize("which", ["lora", "grouped"])
def test_prefill_fills_the_cache_as_one_masked_call_and_keeps_every_token(which, model, grouped_model, tokenizer,
                                                                          prompts, monkeypatch):
    """Prefill runs the left-padded batch right-padded, with plain causal attention (no mask), in one call or in
    groups of rows of similar length, each cut to its longest prompt: the same logits and cache slots as one
    masked call over the whole batch, so the same tokens; each group's call is narrower than the batch."""
    from transformers import StaticCache
    from xsumtune.generate.graphs import greedy_decode, prefill, prefill_groups

    subject = model if which == "lora" else grouped_model
    ids = [p["prompt_ids"] for p in prompts]
    input_ids, attention_mask = left_pad(ids, tokenizer.eos_token_id)
    positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    budget = 700
    groups = prefill_groups(attention_mask.sum(-1).tolist(), budget)
    assert len(groups) >= 3
    shapes, masks = [], []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def attention(query, key, value, attn_mask=None, is_causal=False, **kwargs):
        masks.append((attn_mask is None, is_causal))
        return sdpa(query, key, value, attn_mask=attn_mask, is_causal=is_causal, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", attention)
    counter = subject.get_output_embeddings().register_forward_hook(lambda m, i, out: shapes.append(i[0].shape[:2]))
    config = subject.config.get_text_config(decoder=True)
    caches, logits, calls = [], [], []
    try:
        with torch.inference_mode():
            for causal, tokens in ((False, None), (True, None), (True, budget)):
                cache = StaticCache(config=config, max_cache_len=input_ids.shape[1] + 8)
                logits.append(prefill(subject, cache, input_ids, attention_mask, positions, tokens, causal=causal))
                caches.append(cache)
                calls.append(set(masks))
                masks.clear()
    finally:
        counter.remove()
    assert calls == [{(False, False)}, {(True, True)}, {(True, True)}]  # masked; then causal, with no mask
    assert len(shapes) == 2 + len(groups) and all(seen == 1 for _, seen in shapes)  # the head: last tokens only
    assert all(rows < len(ids) for rows, _ in shapes[2:])
    real = attention_mask.bool()[:, None, :, None]  # [rows, 1, slots, 1]: left padding is masked either way
    width = input_ids.shape[1]
    for cache, out in zip(caches[1:], logits[1:]):
        torch.testing.assert_close(out, logits[0], rtol=1e-4, atol=1e-4)
        for one, other in zip(caches[0].layers, cache.layers, strict=True):
            for a, b in ((one.keys, other.keys), (one.values, other.values)):
                torch.testing.assert_close(torch.where(real, b[:, :, :width], 0), torch.where(real, a[:, :, :width], 0),
                                           rtol=1e-4, atol=1e-4)
            assert int(other.cumulative_length) == int(one.cumulative_length) == width
    hooks = NewlineAt(subject, 13)
    try:
        options = dict(max_new_tokens=30, min_new_tokens=1, eos_token_id=tokenizer.eos_token_id,
                       line_tables=line_tables(tokenizer))
        plain = greedy_decode(subject, input_ids, attention_mask, **options)
        grouped = greedy_decode(subject, input_ids, attention_mask, prefill_tokens=budget, **options)
    finally:
        hooks.remove()
    assert grouped.tolist() == plain.tolist()


def test_the_stage_hands_prefill_tokens_to_the_graphs_loop_only(tokenizer):
    from conftest import tiny
    from xsumtune.generate.systems import decoding_options

    graphs = tiny("generate", cache="graphs", prefill_tokens=50000)
    assert decoding_options(graphs)["prefill_tokens"] == 50000
    assert "prefill_tokens" not in decoding_options(tiny("generate", cache="graphs", prefill_tokens=None))
    # beams leave the graphs loop for generate's static cache, which takes no prefill_tokens: not handed on
    beams = decoding_options(tiny("generate", cache="graphs", prefill_tokens=50000, num_beams=4))
    assert beams["cache_implementation"] == "static" and "prefill_tokens" not in beams


@pytest.mark.parametrize("padding", [0.0, 0.2, 0.5])
def test_decode_groups_are_runs_of_rows_that_skip_only_left_padding(padding):
    from xsumtune.generate.graphs import decode_groups

    draw = random.Random(3)
    lengths = sorted((draw.randint(20, 900) for _ in range(200)), reverse=True)
    groups = decode_groups(lengths, padding, min_rows=16)
    assert [g.start for g in groups] == [0] + [g.stop for g in groups[:-1]] and groups[-1].stop == 200
    width = max(lengths)
    for g in groups:
        rows = lengths[g.start:g.stop]
        assert g.first_slot == width - max(rows)  # no row's prompt starts before its run's first slot
        assert g.stop - g.start >= 16 or g is groups[-1]
        if g.stop - g.start > 16:
            assert min(rows) >= (1 - padding) * max(rows)
    assert len(groups) > 2 and (padding > 0 or len(groups) == 13)  # 0: a new run every 16 rows
    # any order: a run's first slot is still its longest row's (rows out of order just save less)
    shuffled = random.Random(4).sample(lengths, 200)
    assert all(g.first_slot == width - max(shuffled[g.start:g.stop]) for g in decode_groups(shuffled, 0.2))
    assert decode_groups([50] * 40, 0.0) == [(0, 40, 0)]


@pytest.mark.parametrize("heads", [6, 2])
def test_decode_attention_in_groups_equals_one_call_over_every_slot(heads):
    from types import SimpleNamespace
    from xsumtune.generate.graphs import decode_groups, grouped_decode_attention

    torch.manual_seed(0)
    lengths = [30, 29, 27, 20, 18, 12, 11, 5]
    slots = 30 + 4
    query, key, value = torch.randn(8, heads, 1, 8), torch.randn(8, 2, slots, 8), torch.randn(8, 2, slots, 8)
    mask = torch.zeros(8, 1, 1, slots, dtype=torch.bool)
    for row, length in enumerate(lengths):
        mask[row, :, :, 30 - length:] = True
    module = SimpleNamespace(num_key_value_groups=heads // 2, is_causal=True)
    groups = decode_groups(lengths, 0.2, min_rows=2)
    assert len(groups) >= 3 and groups[-1].first_slot > 0
    one, _ = grouped_decode_attention(module, query, key, value, mask, scaling=0.3)
    runs, _ = grouped_decode_attention(module, query, key, value, mask, scaling=0.3, decode_groups=groups)
    assert runs.shape == one.shape == (8, 1, heads, 8)
    torch.testing.assert_close(runs, one)


@pytest.mark.parametrize("which", ["lora", "grouped"])
def test_decode_attention_in_groups_keeps_every_token(which, model, grouped_model, tokenizer):
    """generate.decode_padding: the attention of each decode step runs in groups of rows (the kwarg reaches
    every attention module), rows still leave the batch as they finish, and every token stays the plain loop's."""
    from xsumtune.generate.graphs import decode_groups, greedy_decode

    subject = model if which == "lora" else grouped_model
    ids, input_ids, attention_mask = longest_first_batch(tokenizer, 40, 20, 7)
    assert len(decode_groups([len(i) for i in ids], 0.2)) >= 2
    seen = []
    attention = [m for name, m in subject.named_modules() if name.endswith("self_attn")]
    handles = [m.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("decode_groups")), with_kwargs=True)
               for m in attention]
    hooks = NewlineAt(subject, 13)
    try:
        options = dict(max_new_tokens=30, min_new_tokens=1, eos_token_id=tokenizer.eos_token_id,
                       line_tables=line_tables(tokenizer), min_rows=1)
        plain = greedy_decode(subject, input_ids, attention_mask, **options)
        assert not any(seen)
        grouped = greedy_decode(subject, input_ids, attention_mask, decode_padding=0.2, **options)
    finally:
        hooks.remove()
        for handle in handles:
            handle.remove()
    assert grouped.tolist() == plain.tolist()
    sizes = {g[-1].stop for g in seen if g}  # rows in the batch at each step: the groups follow the drops
    assert len(sizes) >= 2 and max(sizes) == 40
    assert sum(1 for g in seen if g) >= len(attention) * 10
