"""Prompt + summary to token ids: the article is truncated, never the summary; labels mask the prompt."""
from __future__ import annotations


from xsumtune.prompts import split_template

IGNORE_INDEX = -100  # the label value cross-entropy skips


def load_tokenizer(name: str, revision: str | None = None):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer {name}: no eos token; summaries need one to end")
    # Phi-2 has no pad token: pad with eos. Labels come from lengths, never from "is pad", so the
    # real eos at the end of each summary is still learned.
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class PromptEncoder:
    """Builds token ids piecewise (head, article, tail, summary), so training and generation agree."""

    def __init__(self, tokenizer, template: str):
        self.tokenizer = tokenizer
        self.parts = split_template(template)
        self.head = self._leading_special_ids() + self._ids(self.parts.head)
        self.tail = self._ids(self.parts.tail)
        self.eos = tokenizer.eos_token_id

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] if text else []

    def _leading_special_ids(self) -> list[int]:
        """What the tokenizer puts before any text: bos for Llama, Mistral and Gemma, whose models expect
        it; nothing for Phi-2. Pieces are encoded without special tokens, so the prompt's head carries it."""
        plain = self.tokenizer("x", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("x")["input_ids"]
        for start in range(len(full) - len(plain) + 1):
            if full[start:start + len(plain)] == plain:
                return full[:start]
        return []

    def prompt(self, article_ids: list[int], budget: int) -> tuple[list[int], bool]:
        """Prompt ids within `budget` tokens, cutting the article's end; (ids, truncated)."""
        room = budget - len(self.head) - len(self.tail)
        if room <= 0:
            raise ValueError(f"no room for the article: {budget} tokens < template's {len(self.head) + len(self.tail)}")
        return self.head + article_ids[:room] + self.tail, len(article_ids) > room

    def summary_ids(self, summary: str) -> list[int]:
        """The target: the template's summary prefix, the summary and eos."""
        return self._ids(self.parts.summary_prefix + summary) + [self.eos]

    def summary_fits(self, summary: str, max_seq_len: int) -> bool:
        """Whether the summary leaves room for at least one article token within max_seq_len."""
        return max_seq_len - len(self.summary_ids(summary)) - len(self.head) - len(self.tail) > 0

    def encode(self, document: str, summary: str, max_seq_len: int) -> dict:
        """Training example: prompt + summary + eos ≤ max_seq_len; labels are IGNORE_INDEX on the prompt."""
        article_ids = self._ids(document)
        summary_ids = self.summary_ids(summary)
        prompt_ids, truncated = self.prompt(article_ids, max_seq_len - len(summary_ids))
        return {
            "input_ids": prompt_ids + summary_ids,
            "labels": [IGNORE_INDEX] * len(prompt_ids) + summary_ids,
            "prompt_length": len(prompt_ids),
            "truncated": truncated,
        }

    def encode_prompt(self, document: str, max_prompt_len: int) -> tuple[list[int], bool]:
        """Generation prompt: the article is cut so the prompt fits max_prompt_len."""
        return self.prompt(self._ids(document), max_prompt_len)
