"""Prompt + summary to token ids, tokenized as the rendered text: the article is cut to fit, never the summary;
labels mask the prompt."""
from __future__ import annotations

from xsumtune.config import ConfigError
from xsumtune.data.prompts import TemplateParts, split_template

IGNORE_INDEX = -100  # the label value cross-entropy skips
CHARS_PER_TOKEN = 8  # bounds the article text tokenized for a prompt of n tokens (English averages ~4.5)


def load_tokenizer(name: str, revision: str | None = None):
    from transformers import AutoTokenizer

    # Decoded text as the tokens spell it: the clean-up (" ." -> ".") was made for WordPiece and corrupts BPE
    # output, so transformers skips it for BPE anyway, with a warning where a tokenizer's config asks (SmolLM2's).
    tokenizer = AutoTokenizer.from_pretrained(name, revision=revision, clean_up_tokenization_spaces=False)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer {name}: no eos token; summaries need one to end")
    # Phi-2 has no pad token: pad with eos. Labels come from lengths, never from "is pad", so the
    # real eos at the end of each summary is still learned.
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class PromptEncoder:
    """Token ids of the rendered prompt, tokenized as one text (so `Article: The` is "Article", ":", " The", as
    in any text), then the summary's ids and eos; training and generation share the prompt.

    Appending the summary's ids to the prompt's gives the ids of the whole rendered text because every template
    ends its prompt where a byte-level BPE splits anyway: "Summary:" before " The ..." (the summary's leading
    space belongs to its first token), or a single "\\n" before "The ..." (":\\n", a chat's "assistant\\n").
    A prompt ending in "\\n\\n" would not be: ordinary text tokenizes "\\n\\nThe" as "\\n", "\\n", "The".
    Checked id for id on Phi-2's and SmolLM2's tokenizers (tests/test_tokenization.py); a SentencePiece-style
    tokenizer (Llama-2, Mistral) may mark the summary's start differently alone than after "Summary:"."""

    def __init__(self, tokenizer, template: str, chat_template: bool = False):
        self.tokenizer = tokenizer
        parts = split_template(template)
        if chat_template:
            self.before, self.after = _chat_frame(tokenizer, parts)
            self.leading = []  # the chat template writes its own bos-like tokens (<|im_start|>, <s>): none added
            self.summary_prefix = ""  # the reply starts right after the generation prompt's "assistant\n"
        else:
            self.before, self.after = parts.head, parts.tail
            self.leading = self._leading_special_ids()
            self.summary_prefix = parts.summary_prefix
        self.eos = tokenizer.eos_token_id
        self.template_length = len(self.leading) + len(self._ids(self.before + self.after))

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] if text else []

    def _leading_special_ids(self) -> list[int]:
        """What the tokenizer puts before any text: bos for Llama, Mistral and Gemma, whose models expect it;
        nothing for Phi-2 or SmolLM2. Only what leads: a tokenizer that also appends eos must not end the prompt."""
        plain = self.tokenizer("x", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("x")["input_ids"]
        for start in range(len(full) - len(plain) + 1):
            if full[start:start + len(plain)] == plain:
                return full[:start]
        return []

    def _encode(self, document: str) -> tuple[list[int], list[tuple[int, int]]]:
        """The prompt's ids, and the character span in the prompt's text of each token after the leading ones."""
        encoded = self.tokenizer(self.before + document + self.after, add_special_tokens=False,
                                 return_offsets_mapping=True, verbose=False)
        return self.leading + encoded["input_ids"], encoded["offset_mapping"]

    def encode_prompt(self, document: str, max_prompt_len: int) -> tuple[list[int], bool]:
        """Prompt ids within max_prompt_len tokens, the article's end cut if need be; (ids, truncated).

        The cut is made in the text, at a token's start, and the prompt tokenized again: retokenized, the cut
        article may merge with the template differently, so it is cut again while the prompt is over. Each round
        drops what the last was over by; one round fitted every sample article."""
        if max_prompt_len <= self.template_length:
            raise ValueError(f"no room for the article: {max_prompt_len} tokens <= the template's {self.template_length}")
        # A long article is tokenized only as far as the prompt can reach: at CHARS_PER_TOKEN, about twice
        # English's average, the cut falls well inside; in the rare text that fits anyway, all of it is tokenized.
        # rstrip: a trailing space would join the tail's "\n" in one token and shift the count of the article's.
        reach = document[:CHARS_PER_TOKEN * max_prompt_len].rstrip()
        ids, spans = self._encode(reach)
        if len(reach) < len(document) and len(ids) <= max_prompt_len:
            reach = document
            ids, spans = self._encode(reach)
        truncated = len(reach) < len(document) or len(ids) > max_prompt_len
        document = reach
        while len(ids) > max_prompt_len:
            document = self._cut(document, spans, len(ids) - max_prompt_len, max_prompt_len)
            ids, spans = self._encode(document)
        return ids, truncated

    def _cut(self, document: str, spans: list[tuple[int, int]], excess: int, max_prompt_len: int) -> str:
        """The article without its last `excess` tokens (those before the template's tail)."""
        end = len(self.before) + len(document)
        article_tokens = len(spans)
        while article_tokens and spans[article_tokens - 1][0] >= end:
            article_tokens -= 1  # the tail's tokens
        first_dropped = article_tokens - excess
        # min(): progress even where two tokens start at one character (the bytes of one emoji)
        cut = min(spans[first_dropped][0], end - 1) - len(self.before) if first_dropped >= 0 else 0
        document = document[:max(cut, 0)].rstrip()
        if not document:
            raise ValueError(f"no room for the article: {max_prompt_len} tokens hold the template alone")
        return document

    def summary_ids(self, summary: str) -> list[int]:
        """The target: the template's summary prefix, the summary and eos."""
        return self._ids(self.summary_prefix + summary) + [self.eos]

    def summary_fits(self, summary: str, max_seq_len: int) -> bool:
        """Whether the summary leaves room for at least one article token within max_seq_len."""
        return max_seq_len - len(self.summary_ids(summary)) - self.template_length > 0

    def encode(self, document: str, summary: str, max_seq_len: int) -> dict:
        """Training example: prompt + summary + eos ≤ max_seq_len; labels are IGNORE_INDEX on the prompt."""
        summary_ids = self.summary_ids(summary)
        prompt_ids, truncated = self.encode_prompt(document, max_seq_len - len(summary_ids))
        return {
            "input_ids": prompt_ids + summary_ids,
            "labels": [IGNORE_INDEX] * len(prompt_ids) + summary_ids,
            "prompt_length": len(prompt_ids),
            "truncated": truncated,
        }


ARTICLE_MARK = "\x00article\x00"  # stands in for the article while the chat template renders once


def _chat_frame(tokenizer, parts: TemplateParts) -> tuple[str, str]:
    """The chat-rendered prompt around the article: the template's text before {summary} is the user's message,
    then the generation prompt opens the assistant's turn. Rendered once: the article is pasted in between."""
    if not tokenizer.chat_template:
        raise ConfigError(f"prompt.chat_template: true, but the tokenizer {tokenizer.name_or_path} has no chat "
                          "template; set prompt.chat_template: false")
    message = parts.head + ARTICLE_MARK + parts.tail.rstrip()
    text = tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True,
                                         tokenize=False)
    if text.count(ARTICLE_MARK) != 1:
        raise ConfigError(f"prompt.chat_template: the chat template of {tokenizer.name_or_path} does not copy the "
                          "user's message as written; set prompt.chat_template: false")
    before, after = text.split(ARTICLE_MARK)
    return before, after
