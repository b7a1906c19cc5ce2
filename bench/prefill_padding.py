"""How much of the generate stage's prefill is padding, on a profile's params: no model, seconds on a CPU.

The sample's test articles go through the stage's build_prompts and plan_batches (the profile's batch size,
token budget and max_new_tokens), then each batch through prefill_groups for each --prefill-tokens value
(`none`: one call a batch, the whole batch padded to its longest prompt). Recorded per value: prefill calls,
real prompt tokens, the tokens the model runs (rows x each call's longest prompt) and the padding share,
and the attention work (each row's query x key slots, summed) against the unpadded rows'.

Decode reads the whole static cache of its batch at every step: rows x (longest prompt + max_new_tokens) key and
value slots, the left padding of shorter prompts included. `decode` gives, for the profile's token budget and each
--budgets value, the batches, the slots one decode step reads over all batches, and the share of them that is
padding (what a kernel reading only each row's filled slots would skip), counting every row to the cap.

    python bench/prefill_padding.py --profile smol --tokenizer models/tokenizers/smollm2 \\
        --prefill-tokens none,200000,100000,50000

With --weights DIR (models/base after the base_model stage) and --time-articles N, it also times the stage's
prefill on that model: N articles drawn at random (seeded) in one left-padded batch, one call against groups
within --time-prefill-tokens, three repetitions each, and compares both ways' last-position logits (for rows
whose next token differs: how many bf16 rounding steps apart the two tokens were in the one call's logits).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time

import torch

from common import ROOT, commit_facts, cycle_seeded, run_facts, stage_prompts, write_result
from xsumtune.generate.generation import left_pad, plan_batches
from xsumtune.generate.graphs import prefill, prefill_groups


def decode_padding(lengths: list[int], batches: list[list[int]], max_new_tokens: int) -> dict:
    slots = sum(len(batch) * (max(lengths[i] for i in batch) + max_new_tokens) for batch in batches)
    filled = sum(lengths[i] + max_new_tokens for batch in batches for i in batch)
    return {"batches": len(batches), "rows": [len(b) for b in batches], "slots_per_step": slots,
            "filled_slots": filled, "padding_share": round(1 - filled / slots, 4)}


def padding(lengths: list[int], batches: list[list[int]], prefill_tokens: int | None) -> dict:
    calls, run, attention = 0, 0, 0
    for batch in batches:
        for group in prefill_groups([lengths[i] for i in batch], prefill_tokens):
            width = max(lengths[batch[row]] for row in group)
            calls += 1
            run += len(group) * width
            attention += len(group) * width * width
    real = sum(lengths)
    return {"prefill_tokens": prefill_tokens, "calls": calls, "tokens_run": run,
            "padding_share": round(1 - real / run, 4),
            "attention_work_vs_unpadded": round(attention / sum(n * n for n in lengths), 3)}


@torch.inference_mode()
def time_prefill(config, weights: str, prompts: list[list[int]], pad_id: int, prefill_tokens: int, reps: int) -> dict:
    from transformers import StaticCache

    from xsumtune.model.loading import load_base_model

    model = load_base_model(dataclasses.replace(config.model, name=str(ROOT / weights), weights="pretrained"),
                            config.seed).eval()
    input_ids, attention_mask = left_pad(prompts, pad_id)
    positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    seconds, logits = {"one call": [], "groups": []}, {}
    for _ in range(reps):
        for way, tokens in (("one call", None), ("groups", prefill_tokens)):
            cache = StaticCache(config=model.config, max_cache_len=input_ids.shape[1] + 1)
            start = time.perf_counter()
            logits[way] = prefill(model, cache, input_ids, attention_mask, positions, tokens)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds[way].append(round(time.perf_counter() - start, 3))
    lengths = attention_mask.sum(-1).tolist()
    one, groups = logits["one call"].float(), logits["groups"].float()
    gaps = []  # rows whose next token differs: one call's logit gap between the two tokens, in bf16 steps
    for row in (one.argmax(-1) != groups.argmax(-1)).nonzero().flatten().tolist():
        chosen, other = int(one[row].argmax()), int(groups[row].argmax())
        ulp = 2.0 ** (math.floor(math.log2(max(abs(float(one[row, chosen])), 1e-3))) - 7)  # bf16: 8-bit mantissa
        gaps.append(round(float(one[row, chosen] - one[row, other]) / ulp, 2))
    return {"articles": len(prompts), "prefill_tokens": prefill_tokens, "seconds": seconds,
            "median_s": {way: statistics.median(s) for way, s in seconds.items()},
            "plans": {way: padding(lengths, [list(range(len(lengths)))], tokens)
                      for way, tokens in (("one call", None), ("groups", prefill_tokens))},
            "same_argmax": int((one.argmax(-1) == groups.argmax(-1)).sum()),
            "next_token_differs_gap_bf16_steps": gaps,
            "max_abs_logit_diff": round(float((one - groups).abs().max()), 5),
            "max_abs_logit": round(float(one.abs().max()), 3),
            **run_facts()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smol")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--tokenizer", help="a tokenizer directory (default: the profile's model.tokenizer)")
    parser.add_argument("--prefill-tokens", default="none,100000",
                        help="comma-separated generate.prefill_tokens values; none: one call a batch")
    parser.add_argument("--budgets", default="", help="comma-separated generate.token_budget values for the "
                        "decode plans, beside the profile's")
    parser.add_argument("--weights", help="a Hugging Face model directory, to time prefill on it")
    parser.add_argument("--time-articles", type=int, default=48)
    parser.add_argument("--time-prefill-tokens", type=int, default=12000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--commit")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "prefill_padding.json"))
    args = parser.parse_args()
    config, tokenizer, prompts = stage_prompts(args.profile, args.overrides, args.tokenizer)
    lengths = [len(p["prompt_ids"]) for p in prompts]
    e = config.generate
    plan = dict(batch_size=e.batch_size, max_new_tokens=e.max_new_tokens, sort_by_length=e.sort_by_length,
                copies=e.mbr_candidates)
    batches = plan_batches(lengths, token_budget=e.token_budget, **plan)
    budgets = [e.token_budget, *(int(v) for v in args.budgets.split(",") if v.strip() and int(v) != e.token_budget)]
    decode = [{"token_budget": budget, **decode_padding(lengths, plan_batches(lengths, token_budget=budget, **plan),
                                                        e.max_new_tokens)} for budget in budgets]
    values = [None if v.strip() == "none" else int(v) for v in args.prefill_tokens.split(",")]
    timing = {}
    if args.weights:
        drawn = [p["prompt_ids"] for p in cycle_seeded(prompts, args.time_articles)]
        timing = {"timed": time_prefill(config, args.weights, drawn, tokenizer.eos_token_id,
                                        args.time_prefill_tokens, args.reps)}
    write_result(args.out, {
        "bench": "prefill_padding", "profile": args.profile, "overrides": args.overrides, **commit_facts(args.commit),
        "articles": len(lengths), "prompt_tokens_mean": round(sum(lengths) / len(lengths), 1),
        "prompt_tokens_max": max(lengths), "token_budget": e.token_budget, "batches": [len(b) for b in batches],
        "plans": [padding(lengths, batches, value) for value in values], "decode": decode, **timing,
    })


if __name__ == "__main__":
    main()
