"""Labels mask exactly the prompt, the summary is never truncated, eos is present and learned."""
import pytest

from xsumtune.prompts import TEMPLATES, render, split_template
from xsumtune.tokenization import IGNORE_INDEX, PromptEncoder

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
    from xsumtune.training import CompletionCollator

    encoder = PromptEncoder(tokenizer, "direct")
    short = encoder.encode(DOCUMENT, SUMMARY, 1126)
    long = encoder.encode(DOCUMENT + " More text here.", SUMMARY, 1126)
    batch = CompletionCollator(tokenizer.pad_token_id)([short, long])
    row = batch["labels"][0].tolist()
    assert row[len(short["input_ids"]) - 1] == tokenizer.eos_token_id  # real eos learned
    assert row[len(short["input_ids"]):] == [IGNORE_INDEX] * (len(row) - len(short["input_ids"]))  # pads are not
    assert batch["attention_mask"][0].sum() == len(short["input_ids"])
