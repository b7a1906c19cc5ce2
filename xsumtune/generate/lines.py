"""Where a summary's line ends, as lookups a decode step can run on the device: the prediction is the first
line with text (generation.decode_new_tokens), so a row is done at the first newline that follows text.

Both decoders use this one rule: transformers' `generate` through the LineEnd stopping criterion, and the
project's own greedy loop (graphs.py). A lookup is a gather, which a CUDA graph can hold, where
torch.isin sorts and waits on the host."""
from __future__ import annotations

import weakref
from typing import NamedTuple

import torch


class LineTables(NamedTuple):
    """One flag per token id, from the id's text decoded alone. The last entry stands for every id past
    the tokenizer's (a model's padded vocabulary): those decode to nothing, so they are blank."""
    newline: torch.Tensor  # a "\n" anywhere in the token's text
    text_then_newline: torch.Tensor  # text, then a "\n": the token ends a line with text on its own
    blank: torch.Tensor  # whitespace only, or nothing (special tokens)

    def to(self, device) -> LineTables:
        return LineTables(*(table.to(device) for table in self))


_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def line_tables(tokenizer) -> LineTables:
    """Each id decoded alone, once per tokenizer (a second or two).

    Alone and in sequence agree for byte-level BPE: a newline byte is never part of another character."""
    if tokenizer not in _TABLES:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True)

        def table(keep, past_the_end: bool) -> torch.Tensor:
            return torch.tensor([keep(text) for text in texts] + [past_the_end], dtype=torch.bool)

        _TABLES[tokenizer] = LineTables(
            newline=table(lambda text: "\n" in text, False),
            text_then_newline=table(lambda text: bool(text.split("\n", 1)[0].strip()) and "\n" in text, False),
            blank=table(lambda text: not text.strip(), True))
    return _TABLES[tokenizer]


def line_done(tables: LineTables, has_text: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per row, whether its newest token ends its first line with text; has_text (each row's "text seen
    yet") is updated in place."""
    ids = tokens.clamp(max=len(tables.blank) - 1)
    done = (has_text & tables.newline[ids]) | tables.text_then_newline[ids]
    has_text |= ~tables.blank[ids]
    return done
