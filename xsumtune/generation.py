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
    token_ids: tuple[int, ...] = ()  # the new tokens before eos


def left_pad(prompts: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt):] = torch.tensor(prompt)
        attention_mask[row, width - len(prompt):] = 1
    return input_ids, attention_mask


def plan_batches(lengths: list[int], *, batch_size: int, token_budget: int | None, max_new_tokens: int,
                 sort_by_length: bool) -> list[list[int]]:
    """Indices of each batch. Sorted longest first, a batch holds similar lengths (little padding) and
    is capped by rows and by tokens (rows x (longest prompt + max_new_tokens)), which bounds the KV cache."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort_by_length else list(range(len(lengths)))
    batches, current, width = [], [], 0
    for index in order:
        new_width = max(width, lengths[index] + max_new_tokens)
        too_many = len(current) == batch_size
        too_big = token_budget is not None and current and (len(current) + 1) * new_width > token_budget
        if current and (too_many or too_big):
            batches.append(current)
            current, new_width = [], lengths[index] + max_new_tokens
        current.append(index)
        width = new_width
    if current:
        batches.append(current)
    return batches


def trim_at_eos(new_tokens: list[int], eos_token_id: int) -> tuple[list[int], bool]:
    """(tokens before the first eos, whether an eos was generated)."""
    if eos_token_id in new_tokens:
        return new_tokens[: new_tokens.index(eos_token_id)], True
    return new_tokens, False


def decode_new_tokens(tokenizer, new_tokens: list[int], eos_token_id: int, max_new_tokens: int):
    """Text up to eos, cut at the first newline; (text, token count, stopped by the cap)."""
    new_tokens, ended = trim_at_eos(new_tokens, eos_token_id)
    text = tokenizer.decode(new_tokens, skip_special_tokens=True)
    return text.strip().split("\n", 1)[0].strip(), len(new_tokens), not ended and len(new_tokens) >= max_new_tokens


@torch.inference_mode()
def generate_batch(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: int, seed: int = 0,
                   **decoding) -> list[list[int]]:
    """New token ids per prompt (pads after eos included). decoding: further `generate` options
    (num_beams, do_sample, no_repeat_ngram_size, cache_implementation, ...)."""
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
    return output[:, input_ids.shape[1]:].tolist()


def generate_summaries(model, tokenizer, examples: list[dict], *, batch_size: int, max_new_tokens: int,
                       seed: int = 0, desc: str = "generate", token_budget: int | None = None,
                       sort_by_length: bool = False, on_batch=None, **decoding) -> list[Generated]:
    """One Generated per example, in the examples' order, each carrying its own id.

    examples: dicts with "id" and "prompt_ids". Batches are planned by plan_batches; results are put
    back by index, so batch composition can't move a summary to another article. decoding: further
    `generate` options. A batch that fails is retried one example at a time, so one bad article
    costs one recorded error, not its batch. on_batch, if given, receives each batch's results.
    """
    results: list[Generated | None] = [None] * len(examples)
    options = dict(max_new_tokens=max_new_tokens, seed=seed, **decoding)
    batches = plan_batches([len(e["prompt_ids"]) for e in examples], batch_size=batch_size,
                           token_budget=token_budget, max_new_tokens=max_new_tokens, sort_by_length=sort_by_length)
    with tqdm(total=len(examples), desc=desc, unit="article") as progress:
        for indices in batches:
            batch = [examples[i] for i in indices]
            try:
                outputs = generate_batch(model, tokenizer, [e["prompt_ids"] for e in batch], **options)
                generated = [_generated(tokenizer, e, out, max_new_tokens) for e, out in zip(batch, outputs, strict=True)]
            except torch.OutOfMemoryError:
                raise
            except Exception:  # noqa: BLE001 - isolate the failing article below
                generated = [_generate_one(model, tokenizer, e, options) for e in batch]
            for index, result in zip(indices, generated, strict=True):
                results[index] = result
            if on_batch is not None:
                on_batch(generated)
            progress.update(len(batch))
    return results


def _generated(tokenizer, example: dict, new_tokens: list[int], max_new_tokens: int) -> Generated:
    text, count, capped = decode_new_tokens(tokenizer, new_tokens, tokenizer.eos_token_id, max_new_tokens)
    return Generated(example["id"], text, count, capped, token_ids=tuple(new_tokens[:count]))


def _generate_one(model, tokenizer, example: dict, options: dict) -> Generated:
    try:
        (out,) = generate_batch(model, tokenizer, [example["prompt_ids"]], **options)
        return _generated(tokenizer, example, out, options["max_new_tokens"])
    except torch.OutOfMemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - recorded per article, counted as failed
        return Generated(example["id"], "", 0, False, f"{type(error).__name__}: {error}")
