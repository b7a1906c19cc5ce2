"""Batched, left-padded generation with max_new_tokens: one prediction (or recorded error) per article."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, NamedTuple

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm
from transformers import StaticCache, StoppingCriteria, StoppingCriteriaList

from xsumtune.generate.graphs import greedy_decode, to_device
from xsumtune.generate.lines import LineTables, line_done, line_tables
from xsumtune.generate.mbr import select
from xsumtune.generate.records import Generated

GRAPHS_OPTIONS = ("prefill_tokens", "decode_padding", "triton_kernels")  # generate params only the graphs loop takes (greedy_decode's)


def left_pad(prompts: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt):] = torch.tensor(prompt)
        attention_mask[row, width - len(prompt):] = 1
    return input_ids, attention_mask


def plan_batches(lengths: list[int], *, batch_size: int, token_budget: int | None, max_new_tokens: int,
                 sort_by_length: bool, copies: int = 1) -> list[list[int]]:
    """Indices of each batch. Sorted longest first, a batch holds similar lengths (little padding) and
    is capped by rows and by tokens (rows x (longest prompt + max_new_tokens)), which bounds the KV cache.
    copies: rows generated per prompt (candidates for minimum Bayes risk); both caps count every row."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort_by_length else list(range(len(lengths)))
    batches, current, width = [], [], 0
    for index in order:
        new_width = max(width, lengths[index] + max_new_tokens)
        too_many = (len(current) + 1) * copies > batch_size
        too_big = token_budget is not None and current and (len(current) + 1) * copies * new_width > token_budget
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


def first_line_with_text(text: str) -> str:
    """The first line that has text in it, stripped. An instruct model often answers `Summary:` with a
    line break first and the summary after it: cutting at the first newline would leave nothing."""
    return next((line.strip() for line in text.split("\n") if line.strip()), "")


def line_ended(text: str) -> bool:
    """A line with text in it is followed by a newline: the prediction is complete, whatever came next."""
    return "\n" in text.lstrip()


def begins_with_blank_line(text: str) -> bool:
    """The first line is empty or whitespace and a line break follows it."""
    first, newline, _ = text.partition("\n")
    return bool(newline) and not first.strip()


class Decoded(NamedTuple):
    prediction: str
    tokens: int  # new tokens before eos
    stopped_by_cap: bool
    leading_newline: bool


def decode_new_tokens(tokenizer, new_tokens: list[int], eos_token_id: int, max_new_tokens: int) -> Decoded:
    """The first line with text of what came before eos. Cut by the cap: no eos and no finished line
    within max_new_tokens (a line ended by a newline is complete, even at the cap's last token)."""
    new_tokens, ended = trim_at_eos(new_tokens, eos_token_id)
    text = tokenizer.decode(new_tokens, skip_special_tokens=True)
    capped = not ended and len(new_tokens) >= max_new_tokens and not line_ended(text)
    return Decoded(first_line_with_text(text), len(new_tokens), capped, begins_with_blank_line(text))


class LineEnd(StoppingCriteria):
    """Per row: done at the first newline that follows text, the end of the line decode_new_tokens keeps.

    Generating to the cap and cutting there gives the same prediction; this only skips the tokens after.
    Rows stay in place from step to step (greedy or sampling), so each row's "has text yet" is kept as
    state; beam search reorders rows and ends hypotheses early, so it gets no LineEnd (generate_batch)."""

    def __init__(self, tables: LineTables, device: torch.device):
        self.tables = tables.to(device)
        self.has_text: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        last = input_ids[:, -1]
        if self.has_text is None:
            self.has_text = torch.zeros_like(last, dtype=torch.bool)
        return line_done(self.tables, self.has_text, last)


# Every attention kernel but cuDNN's (generate.cudnn_attention: false). A profile showed each cuDNN SDPA call
# spending about 0.9 ms of host time on an H200 (bench/results/generate_static_96000_profile.txt), yet with
# cuDNN on the smol profile generated faster (e2e_smol-cudnn.json against e2e_smol.json): the default keeps it.
NO_CUDNN_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@torch.inference_mode()
def generate_batch(model, tokenizer, prompts: list[list[int]], **options) -> list[list[int]]:
    """New token ids per prompt (pads after eos or the line's end included): launch_batch's, read back."""
    return launch_batch(model, tokenizer, prompts, **options)()


@torch.inference_mode()
def launch_batch(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: int, seed: int = 0,
                 stop_at_line_end: bool = True, cudnn_attention: bool = True, while_running=None,
                 **decoding) -> Callable[[], list[list[int]]]:
    """Generates for a batch and returns a function that gives the new token ids per prompt (pads after eos or
    the line's end included). With cache_implementation graphs, the batch's last decode steps may still be
    queued on the GPU when this returns (the function waits for them), and while_running, if given, is called
    once the batch's prefill is queued, before the host first waits for the GPU: host work done there (reading
    the batch before back) overlaps the GPU's, which otherwise sits idle between batches. Other caches call it
    first. decoding: further `generate` options (num_beams, do_sample, no_repeat_ngram_size,
    cache_implementation, ...).

    stop_at_line_end: each row stops at the newline ending its first line with text (LineEnd), except
    under beam search, where a stopping criterion would end a hypothesis early and change which beam wins.
    cudnn_attention false: PyTorch's SDPA may pick any kernel but cuDNN's (a CPU has none of cuDNN's)."""
    eos = tokenizer.eos_token_id
    input_ids, attention_mask = left_pad(prompts, eos)
    device = next(model.parameters()).device
    if decoding.get("cache_implementation") == "graphs":  # the project's own greedy loop
        loop = ("cache_implementation", "min_new_tokens", *GRAPHS_OPTIONS)
        other = {k: v for k, v in decoding.items() if k not in loop and (k, v) not in (("num_beams", 1), ("do_sample", False))}
        if other:
            raise ValueError(f"cache_implementation graphs decodes greedily and takes no {', '.join(sorted(other))}")
        with nullcontext() if cudnn_attention else sdpa_kernel(NO_CUDNN_ATTENTION):
            tokens = greedy_decode(model, to_device(input_ids, device), to_device(attention_mask, device),
                                   max_new_tokens=max_new_tokens, eos_token_id=eos,
                                   min_new_tokens=decoding.get("min_new_tokens", 0),
                                   line_tables=line_tables(tokenizer) if stop_at_line_end else None,
                                   lengths=[len(prompt) for prompt in prompts], while_running=while_running,
                                   **{key: decoding.get(key) for key in GRAPHS_OPTIONS})
        return tokens.tolist
    if while_running is not None:
        while_running()
    if decoding.get("cache_implementation") == "static":
        decoding = {key: value for key, value in decoding.items() if key != "cache_implementation"}
        # Sized to this batch. generate's own static cache is as long as the longest it has made on this
        # model, and the longest batch runs first: every later batch would get its slots.
        decoding["past_key_values"] = StaticCache(config=model.config.get_text_config(decoder=True),
                                                  max_cache_len=input_ids.shape[1] + max_new_tokens)
        # Every batch is a new shape; auto-compile would recompile for each (the bench runs it eager too).
        decoding.setdefault("disable_compile", True)
    if stop_at_line_end and decoding.get("num_beams", 1) == 1:
        decoding["stopping_criteria"] = StoppingCriteriaList([*decoding.get("stopping_criteria", ()),
                                                              LineEnd(line_tables(tokenizer), device)])
    torch.manual_seed(seed)
    with nullcontext() if cudnn_attention else sdpa_kernel(NO_CUDNN_ATTENTION):
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=max_new_tokens,  # never max_length: that would count the prompt
            eos_token_id=eos,
            pad_token_id=eos,
            **decoding,
        )
    return output[:, input_ids.shape[1]:].tolist


def generate_summaries(model, tokenizer, examples: list[dict], *, batch_size: int, max_new_tokens: int,
                       seed: int = 0, desc: str = "generate", token_budget: int | None = None,
                       sort_by_length: bool = False, on_batch=None, candidates: int = 1,
                       **decoding) -> list[Generated]:
    """One Generated per example, in the examples' order, each carrying its own id.

    examples: dicts with "id" and "prompt_ids". Batches are planned by plan_batches; results are put
    back by index, so batch composition can't move a summary to another article. decoding: further
    `generate` options. A batch that fails is retried one example at a time, so one bad article
    costs one recorded error, not its batch. Each batch is read back while the next one runs (launch_batch's
    while_running), so on a GPU the host's reading overlaps the GPU's work. on_batch, if given, receives each
    batch's results.
    candidates > 1: that many sequences per article (samples, or the best beams), and the prediction is
    the one that agrees most with the others (minimum Bayes risk, xsumtune/generate/mbr.py).
    """
    results: list[Generated | None] = [None] * len(examples)
    options = dict(max_new_tokens=max_new_tokens, seed=seed, **decoding)
    if candidates > 1:
        options["num_return_sequences"] = candidates
    batches = plan_batches([len(e["prompt_ids"]) for e in examples], batch_size=batch_size, copies=candidates,
                           token_budget=token_budget, max_new_tokens=max_new_tokens, sort_by_length=sort_by_length)
    with tqdm(total=len(examples), desc=desc, unit="article") as progress:
        def read_back(indices: list[int], batch: list[dict], read) -> tuple:
            """A launched batch's results: (indices, batch, its Generated, or None where it failed)."""
            try:
                if read is not None:
                    rows = _by_prompt(read(), len(batch), candidates)
                    return indices, batch, [_chosen(tokenizer, e, out, max_new_tokens)
                                            for e, out in zip(batch, rows, strict=True)]
            except torch.OutOfMemoryError:
                raise
            except Exception:  # noqa: BLE001 - retried one article at a time in record
                pass
            return indices, batch, None

        def record(indices: list[int], batch: list[dict], generated: list[Generated] | None) -> None:
            if generated is None:  # the batch failed: one article at a time, so one bad article costs only itself
                generated = [_generate_one(model, tokenizer, e, options) for e in batch]
            for index, result in zip(indices, generated, strict=True):
                results[index] = result
            if on_batch is not None:
                on_batch(generated)
            progress.update(len(batch))

        queued = None  # the batch launched last: read back while the next one runs
        for indices in batches:
            batch, done = [examples[i] for i in indices], []

            def while_running() -> None:
                if queued is not None and not done:
                    done.append(read_back(*queued))
            try:
                read = launch_batch(model, tokenizer, [e["prompt_ids"] for e in batch], while_running=while_running,
                                    **options)
            except torch.OutOfMemoryError:
                raise
            except Exception:  # noqa: BLE001 - retried one article at a time in record
                read = None
            while_running()  # where launching failed first, or did not call it
            if done:
                record(*done[0])
            queued = indices, batch, read
        if queued is not None:
            record(*read_back(*queued))
    return results


def _generated(tokenizer, example: dict, new_tokens: list[int], max_new_tokens: int) -> Generated:
    decoded = decode_new_tokens(tokenizer, new_tokens, tokenizer.eos_token_id, max_new_tokens)
    return Generated(example["id"], decoded.prediction, decoded.tokens, decoded.stopped_by_cap,
                     token_ids=tuple(new_tokens[:decoded.tokens]), leading_newline=decoded.leading_newline)


def _by_prompt(outputs: list[list[int]], prompts: int, candidates: int) -> list[list[list[int]]]:
    """generate's rows grouped by prompt (each prompt's candidates are consecutive rows); the count must match."""
    if len(outputs) != prompts * candidates:
        raise RuntimeError(f"generate returned {len(outputs)} sequences for {prompts} prompts x {candidates}")
    return [outputs[row * candidates:(row + 1) * candidates] for row in range(prompts)]


def _chosen(tokenizer, example: dict, outputs: list[list[int]], max_new_tokens: int) -> Generated:
    """The one generation, or of several candidates the MBR pick."""
    options = [_generated(tokenizer, example, out, max_new_tokens) for out in outputs]
    return options[select([g.prediction for g in options])] if len(options) > 1 else options[0]


def _generate_one(model, tokenizer, example: dict, options: dict) -> Generated:
    try:
        outputs = generate_batch(model, tokenizer, [example["prompt_ids"]], **options)
        (rows,) = _by_prompt(outputs, 1, options.get("num_return_sequences", 1))
        return _chosen(tokenizer, example, rows, options["max_new_tokens"])
    except torch.OutOfMemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - recorded per article, counted as failed
        return Generated(example["id"], "", 0, False, f"{type(error).__name__}: {error}")
