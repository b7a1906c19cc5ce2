"""Batched, left-padded generation with max_new_tokens: one prediction (or recorded error) per article."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class Generated:
    id: str
    prediction: str
    tokens: int  # new tokens generated, eos excluded
    stopped_by_cap: bool  # ran to max_new_tokens without eos
    error: str | None = None


def left_pad(prompts: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt):] = torch.tensor(prompt)
        attention_mask[row, width - len(prompt):] = 1
    return input_ids, attention_mask


def decode_new_tokens(tokenizer, new_tokens: list[int], eos_token_id: int, max_new_tokens: int):
    """Text up to eos, cut at the first newline; (text, token count, stopped by the cap)."""
    if eos_token_id in new_tokens:
        new_tokens = new_tokens[: new_tokens.index(eos_token_id)]
        stopped_by_cap = False
    else:
        stopped_by_cap = len(new_tokens) >= max_new_tokens
    text = tokenizer.decode(new_tokens, skip_special_tokens=True)
    return text.strip().split("\n", 1)[0].strip(), len(new_tokens), stopped_by_cap


@torch.inference_mode()
def generate_batch(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: int, seed: int = 0,
                   **decoding) -> list[tuple[str, int, bool]]:
    """decoding: further `generate` options (num_beams, do_sample, no_repeat_ngram_size, ...)."""
    eos = tokenizer.eos_token_id
    input_ids, attention_mask = left_pad(prompts, eos)
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    output = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        max_new_tokens=max_new_tokens,  # never max_length: that would count the prompt
        eos_token_id=eos,
        pad_token_id=eos,
        **decoding,
    )
    new_tokens = output[:, input_ids.shape[1]:].tolist()
    return [decode_new_tokens(tokenizer, tokens, eos, max_new_tokens) for tokens in new_tokens]


def generate_summaries(model, tokenizer, examples: list[dict], *, batch_size: int, max_new_tokens: int,
                       seed: int = 0, desc: str = "generate", **decoding) -> list[Generated]:
    """One Generated per example, in the examples' order, each carrying its own id.

    examples: dicts with "id" and "prompt_ids". decoding: further `generate` options. A batch that
    fails is retried one example at a time, so one bad article costs one recorded error, not its batch.
    """
    results: list[Generated] = []
    options = dict(max_new_tokens=max_new_tokens, seed=seed, **decoding)
    for start in tqdm(range(0, len(examples), batch_size), desc=desc, unit="batch"):
        batch = examples[start:start + batch_size]
        try:
            outputs = generate_batch(model, tokenizer, [e["prompt_ids"] for e in batch], **options)
            results += [Generated(e["id"], *out) for e, out in zip(batch, outputs, strict=True)]
        except torch.OutOfMemoryError:
            raise
        except Exception:  # noqa: BLE001 - isolate the failing article below
            for example in batch:
                results.append(_generate_one(model, tokenizer, example, options))
    return results


def _generate_one(model, tokenizer, example: dict, options: dict) -> Generated:
    try:
        (out,) = generate_batch(model, tokenizer, [example["prompt_ids"]], **options)
        return Generated(example["id"], *out)
    except torch.OutOfMemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - recorded per article, counted as failed
        return Generated(example["id"], "", 0, False, f"{type(error).__name__}: {error}")
