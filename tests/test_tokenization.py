"""Labels mask exactly the prompt, the summary is never truncated, eos is present and learned."""
import functools

import pytest

from conftest import ROOT, SMOL_TOKENIZER_DIR, TOKENIZER_DIR, compose_params
from xsumtune.config import ConfigError
from xsumtune.data.sources import Report, load_split
from xsumtune.data.prompts import TEMPLATES, render, split_template
from xsumtune.data.tokenization import IGNORE_INDEX, PromptEncoder, load_tokenizer

DOCUMENT = "The council approved the plan on Monday.\nWork starts next year and will cost £3m."
SUMMARY = "A council has approved plans for a new bridge."


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_template_renders_and_masks_the_prompt(tokenizer, template):
    text = render(template, DOCUMENT, SUMMARY)
    assert DOCUMENT in text and text.endswith(SUMMARY)
    encoded = PromptEncoder(tokenizer, template).encode(DOCUMENT, SUMMARY, 1126)
    n = encoded["prompt_length"]
    assert encoded["labels"][:n] == [IGNORE_INDEX] * n
    assert encoded["labels"][n:] == encoded["input_ids"][n:]  # every summary token and eos is learned
    assert encoded["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(encoded["input_ids"][n:-1]).strip() == SUMMARY
    assert tokenizer.decode(encoded["input_ids"][:n]) == render(template, DOCUMENT)


def test_default_template_is_the_reference_experiments():
    assert TEMPLATES["direct"] == ("Article: {article}\n\nSummarize the above article in one sentence.\n"
                                   "Summary: {summary}")
    parts = split_template("direct")
    assert parts.tail.endswith("Summary:") and parts.summary_prefix == " "


def test_long_article_is_cut_never_the_summary(tokenizer):
    document = " ".join(f"word{i}" for i in range(3000))
    encoder = PromptEncoder(tokenizer, "direct")
    encoded = encoder.encode(document, SUMMARY, 256)
    assert len(encoded["input_ids"]) == 256
    assert encoded["truncated"]
    n = encoded["prompt_length"]
    assert tokenizer.decode(encoded["input_ids"][n:-1]).strip() == SUMMARY
    assert encoded["input_ids"][-1] == tokenizer.eos_token_id
    # the template's instruction after the article survives the cut
    assert tokenizer.decode(encoded["input_ids"][:n]).endswith("Summarize the above article in one sentence.\nSummary:")


def test_short_article_is_not_marked_truncated(tokenizer):
    encoded = PromptEncoder(tokenizer, "direct").encode(DOCUMENT, SUMMARY, 1126)
    assert not encoded["truncated"]
    assert len(encoded["input_ids"]) < 1126


def test_summary_that_cannot_fit_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="no room for the article"):
        PromptEncoder(tokenizer, "direct").encode(DOCUMENT, " ".join(["long"] * 300), 64)


def test_generation_prompt_matches_the_training_prompt(tokenizer):
    encoder = PromptEncoder(tokenizer, "direct")
    encoded = encoder.encode(DOCUMENT, SUMMARY, 1126)
    prompt, truncated = encoder.encode_prompt(DOCUMENT, 1066)
    assert prompt == encoded["input_ids"][:encoded["prompt_length"]] and not truncated


def test_eos_pad_does_not_hide_eos_label(tokenizer):
    from xsumtune.train.training import CompletionCollator

    encoder = PromptEncoder(tokenizer, "direct")
    short = encoder.encode(DOCUMENT, SUMMARY, 1126)
    long = encoder.encode(DOCUMENT + " More text here.", SUMMARY, 1126)
    batch = CompletionCollator(tokenizer.pad_token_id)([short, long])
    row = batch["labels"][0].tolist()
    assert row[len(short["input_ids"]) - 1] == tokenizer.eos_token_id  # real eos learned
    assert row[len(short["input_ids"]):] == [IGNORE_INDEX] * (len(row) - len(short["input_ids"]))  # pads are not
    assert batch["attention_mask"][0].sum() == len(short["input_ids"])


# Natural tokenization, checked id for id on both tokenizers the profiles use and on real XSum articles.

TOKENIZERS = {"phi-2": TOKENIZER_DIR, "smollm2": SMOL_TOKENIZER_DIR}


@functools.cache
def _tokenizer(name):
    return load_tokenizer(str(TOKENIZERS[name]))


@functools.cache
def sample_rows():
    """Test articles as preprocess cleans them: the two longest (cut at any length here) and four others."""
    rows = load_split(str(ROOT / "data" / "sample"), "test", "error", Report())
    by_length = sorted(rows, key=lambda row: len(row["document"]))
    return by_length[-2:] + rows[:4]


def plain_ids(tokenizer, text, chat=False):
    # a chat-rendered text carries its own <|im_start|>: tokenized without special tokens, as HF's chat path does
    return tokenizer(text, add_special_tokens=not chat, verbose=False)["input_ids"]


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_article_joins_the_template_as_in_ordinary_text(name):
    tokenizer = _tokenizer(name)
    prompt, _ = PromptEncoder(tokenizer, "direct").encode_prompt("The council met.", 1126)
    assert prompt[:3] == plain_ids(tokenizer, "Article: The")  # "Article", ":", " The": no lone " " token


@pytest.mark.parametrize("template", sorted(TEMPLATES))
@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_ids_are_the_tokenization_of_the_rendered_text(name, template):
    tokenizer = _tokenizer(name)
    encoder = PromptEncoder(tokenizer, template)
    for row in sample_rows():
        document, summary = row["document"], row["summary"]
        encoded = encoder.encode(document, summary, 100_000)
        n = encoded["prompt_length"]
        assert not encoded["truncated"]
        assert encoded["input_ids"][:n] == plain_ids(tokenizer, render(template, document))
        whole = render(template, document, summary) + tokenizer.eos_token
        assert encoded["input_ids"] == plain_ids(tokenizer, whole)
        assert encoded["labels"] == [IGNORE_INDEX] * n + encoded["input_ids"][n:]
        assert encoder.encode_prompt(document, 100_000) == (encoded["input_ids"][:n], False)


def check_cut_prompt(tokenizer, encoder, prompt_ids, document, budget, chat=False):
    """The prompt fits, is the tokenizer's own tokenization of its text, and that text is the template around
    the article's beginning."""
    assert budget - 3 <= len(prompt_ids) <= budget  # the cut wastes at most a token or so (measured: 0 or 1)
    text = tokenizer.decode(prompt_ids)
    assert plain_ids(tokenizer, text, chat) == prompt_ids
    assert text.startswith(encoder.before) and text.endswith(encoder.after)
    kept = text[len(encoder.before):len(text) - len(encoder.after)]
    assert kept and document.startswith(kept) and len(kept) < len(document)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_long_articles_are_cut_to_a_natural_prompt_that_fits(name, template):
    tokenizer = _tokenizer(name)
    encoder = PromptEncoder(tokenizer, template)
    max_seq_len, max_new_tokens = 256, 60
    for row in sample_rows()[:2]:
        document, summary = row["document"], row["summary"]
        encoded = encoder.encode(document, summary, max_seq_len)
        n = encoded["prompt_length"]
        assert encoded["truncated"] and len(encoded["input_ids"]) <= max_seq_len
        summary_ids = encoded["input_ids"][n:]
        assert summary_ids == plain_ids(tokenizer, split_template(template).summary_prefix + summary,
                                        chat=True) + [tokenizer.eos_token_id]  # never cut
        assert encoded["labels"] == [IGNORE_INDEX] * n + summary_ids
        check_cut_prompt(tokenizer, encoder, encoded["input_ids"][:n], document, max_seq_len - len(summary_ids))
        prompt, truncated = encoder.encode_prompt(document, max_seq_len - max_new_tokens)
        assert truncated
        check_cut_prompt(tokenizer, encoder, prompt, document, max_seq_len - max_new_tokens)


def user_turn(template, document, summary=None):
    """The conversation HF's chat path would tokenize: the template up to {summary} as the user's message."""
    messages = [{"role": "user", "content": render(template, document).rstrip()}]
    return messages + ([{"role": "assistant", "content": summary}] if summary is not None else [])


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_chat_template_prompt_is_the_tokenized_user_turn(template):
    tokenizer = _tokenizer("smollm2")
    encoder = PromptEncoder(tokenizer, template, chat_template=True)
    for row in sample_rows()[2:]:
        document, summary = row["document"], row["summary"]
        encoded = encoder.encode(document, summary, 100_000)
        n = encoded["prompt_length"]
        rendered = tokenizer.apply_chat_template(user_turn(template, document), add_generation_prompt=True,
                                                 tokenize=False)
        assert encoded["input_ids"][:n] == plain_ids(tokenizer, rendered, chat=True)
        # HF's own chat tokenization agrees, and the rendered text's <|im_start|> is not doubled by a bos
        assert encoded["input_ids"][:n] == tokenizer.apply_chat_template(
            user_turn(template, document), add_generation_prompt=True)["input_ids"]
        assert plain_ids(tokenizer, rendered) == plain_ids(tokenizer, rendered, chat=True)
        # the summary is the assistant's reply, closed by eos (<|im_end|>): the whole conversation, less the "\n"
        # the chat template writes after the last turn
        conversation = tokenizer.apply_chat_template(user_turn(template, document, summary), tokenize=False)
        assert conversation.endswith(tokenizer.eos_token + "\n")
        assert encoded["input_ids"] == plain_ids(tokenizer, conversation[:-1], chat=True)
        assert encoded["input_ids"][-1] == tokenizer.eos_token_id == 2
        assert encoded["labels"] == [IGNORE_INDEX] * n + encoded["input_ids"][n:]


def test_chat_template_cuts_long_articles():
    tokenizer = _tokenizer("smollm2")
    encoder = PromptEncoder(tokenizer, "direct", chat_template=True)
    for row in sample_rows()[:2]:
        encoded = encoder.encode(row["document"], row["summary"], 256)
        n = encoded["prompt_length"]
        summary_ids = plain_ids(tokenizer, row["summary"], chat=True) + [tokenizer.eos_token_id]
        assert encoded["truncated"] and encoded["input_ids"][n:] == summary_ids
        check_cut_prompt(tokenizer, encoder, encoded["input_ids"][:n], row["document"], 256 - len(summary_ids),
                         chat=True)
        check_cut_prompt(tokenizer, encoder, encoder.encode_prompt(row["document"], 196)[0], row["document"], 196,
                         chat=True)


def test_chat_template_without_one_names_the_key(tokenizer):
    assert not tokenizer.chat_template  # Phi-2's tokenizer has none
    with pytest.raises(ConfigError, match=r"^prompt\.chat_template: .*no chat template"):
        PromptEncoder(tokenizer, "direct", chat_template=True)


def test_preprocess_stops_with_one_line_on_chat_template_without_one(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from stages.preprocess import main

    monkeypatch.chdir(ROOT)  # the tiny profile's paths are the repository's
    params = compose_params(tmp_path / "params.yaml", overrides=["prompt.chat_template=true"])
    result = CliRunner().invoke(main, ["--params", str(params), "--out-dir", str(tmp_path / "out"),
                                       "--stats", str(tmp_path / "stats.json")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: prompt.chat_template: true, but the tokenizer ")
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_tokenizers_load_without_the_clean_up_setting():
    """SmolLM2's tokenizer_config.json asks for clean-up; transformers warns and ignores it for BPE."""
    for name in TOKENIZERS:
        assert _tokenizer(name).clean_up_tokenization_spaces is False
