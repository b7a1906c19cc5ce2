"""The five prompt templates, chosen by name; each holds one {article} and ends with {summary}."""
from __future__ import annotations

from typing import NamedTuple

TEMPLATES: dict[str, str] = {
    # The reference experiment's template, and the default.
    "direct": "Article: {article}\n\nSummarize the above article in one sentence.\nSummary: {summary}",
    "simple": "Summarize this article in one sentence.\n\n{article}\n\nSummary: {summary}",
    "instruct": (
        "### Instruction:\nWrite a one-sentence summary of the news article below.\n\n"
        "### Input:\n{article}\n\n### Response:\n{summary}"
    ),
    "chat": (
        "User: Here is a news article.\n\n{article}\n\n"
        "Summarize it in one sentence.\nAssistant: {summary}"
    ),
    "qa": "{article}\n\nQuestion: What is this article about, in one sentence?\nAnswer: {summary}",
}


class TemplateParts(NamedTuple):
    """A template cut around the article: head + article + tail is the prompt; the summary follows."""
    head: str
    tail: str
    summary_prefix: str  # whitespace that belongs to the summary's first token (" word" in BPE)


def split_template(name: str) -> TemplateParts:
    try:
        template = TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown template {name!r}; choose from {sorted(TEMPLATES)}") from None
    head, rest = template.split("{article}")
    tail, after = rest.split("{summary}")
    if after:
        raise ValueError(f"template {name!r} must end with {{summary}}")
    stripped = tail.rstrip(" ")
    return TemplateParts(head, stripped, tail[len(stripped):])


def render(name: str, article: str, summary: str = "") -> str:
    """The template as text: training and generation tokenize it as one text (PromptEncoder)."""
    parts = split_template(name)
    return parts.head + article + parts.tail + (parts.summary_prefix + summary if summary else "")
