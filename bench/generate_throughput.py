"""Generation throughput of the generate stage's code on Phi-2's architecture (random weights, bf16).

Prompts: the real XSum test sample under the default template, cycled to --prompts; exactly
--new-tokens new tokens per article (random weights never emit eos, so min = max). Runs the plain path
(dataset order, fixed batch, unmerged LoRA, dynamic cache) on a subset and each fast variant on all
prompts, checks the fast path's greedy tokens against the plain path's, and writes one JSON per run.

    python bench/generate_throughput.py --out-dir bench/results
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from common import TOKENIZER, cycle_seeded, phi2_random, profile_table, run_facts, write_result, xsum_test_rows
from xsumtune.generate.generation import generate_summaries, plan_batches
from xsumtune.data.tokenization import PromptEncoder, load_tokenizer

TEST_SET = 11_334  # XSum test articles


def timed(model, tokenizer, prompts, new_tokens, **options):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    results = generate_summaries(model, tokenizer, prompts, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 stop_at_line_end=False, **options)  # exactly new_tokens, newlines or not
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return results, {
        "articles": len(prompts), "seconds": round(seconds, 2),
        "articles_per_s": round(len(prompts) / seconds, 1),
        "new_tokens_per_s": round(sum(r.tokens for r in results) / seconds),
        "projected_test_set_s": round(TEST_SET * seconds / len(prompts), 1),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
        "failed": sum(r.error is not None for r in results),
    }


@torch.inference_mode()
def divergence_gaps(model, prompts, plain, other) -> list[dict]:
    """For each article whose tokens differ: the plain model's logit gap, at the first differing position,
    between the token the plain path chose and the one the other path chose (teacher-forced on the plain
    path's tokens). A gap within a few bf16 rounding steps of the logit is a tie, not a bug."""
    device = next(model.parameters()).device
    gaps = []
    for prompt, a, b in zip(prompts, plain, other):
        if a.token_ids == b.token_ids:
            continue
        j = next(i for i, (x, y) in enumerate(zip(a.token_ids + (-1,), b.token_ids + (-2,))) if x != y)
        ids = torch.tensor([prompt["prompt_ids"] + list(a.token_ids[:j])], device=device)
        logits = model(input_ids=ids).logits[0, -1].float()
        chosen, other_token = a.token_ids[j], b.token_ids[j]
        top = logits[chosen].abs().item()
        ulp = 2.0 ** (int(torch.floor(torch.log2(torch.tensor(max(top, 1e-3)))).item()) - 7)  # bf16: 8-bit mantissa
        gap = (logits[chosen] - logits[other_token]).item()
        gaps.append({"position": j, "gap": round(gap, 4), "ulps": round(gap / ulp, 2)})
    return gaps


def equality(model, prompts, plain, other) -> dict:
    same = sum(a.token_ids == b.token_ids for a, b in zip(plain, other))
    gaps = divergence_gaps(model, prompts, plain, other)
    ties = sum(abs(g["ulps"]) <= 4 for g in gaps)
    return {"equal_to_plain": f"{same}/{len(plain)}", "equal_to_plain_share": round(same / len(plain), 4),
            "diverged_at_a_tie": ties, "equal_or_tie_share": round((same + ties) / len(plain), 4),
            "divergence_gap_ulps_max": max((abs(g["ulps"]) for g in gaps), default=0.0),
            "divergence_positions": sorted(g["position"] for g in gaps)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=2048)
    parser.add_argument("--plain-prompts", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=60)
    parser.add_argument("--max-seq-len", type=int, default=1126)
    parser.add_argument("--variants", default="plain,merged,sorted,static")
    parser.add_argument("--budgets", default="160000")
    parser.add_argument("--batch-cap", type=int, default=1024)
    parser.add_argument("--out-dir", default="bench/results")
    parser.add_argument("--profile", action="store_true", help="profile one batch of the static-cache path")
    args = parser.parse_args()

    tokenizer = load_tokenizer(TOKENIZER)
    encoder = PromptEncoder(tokenizer, "direct")
    rows = cycle_seeded(xsum_test_rows(), args.prompts)
    prompts = [{"id": str(i), "prompt_ids": encoder.encode_prompt(row["document"], args.max_seq_len - args.new_tokens)[0]}
               for i, row in enumerate(rows)]
    lengths = [len(p["prompt_ids"]) for p in prompts]
    print(f"{len(prompts)} prompts, mean {sum(lengths) / len(lengths):.0f} tokens, max {max(lengths)}")

    model = phi2_random().eval()
    merged = copy.deepcopy(model).merge_and_unload().eval()
    facts = {**run_facts(), "prompt_tokens_mean": round(sum(lengths) / len(lengths), 1), "new_tokens": args.new_tokens}
    generate_summaries(merged, tokenizer, prompts[:8], batch_size=8, max_new_tokens=4)  # warm-up: kernels, handles

    if args.profile:
        budget = int(args.budgets.split(",")[0])
        batch = plan_batches([len(p["prompt_ids"]) for p in prompts], batch_size=args.batch_cap, token_budget=budget,
                             max_new_tokens=args.new_tokens, sort_by_length=True)[len(prompts) // 1000]
        profile_table(lambda: generate_summaries(
            merged, tokenizer, [prompts[i] for i in batch], batch_size=args.batch_cap, max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens, stop_at_line_end=False, cache_implementation="static",
            disable_compile=True),
            f"{args.out_dir}/generate_static_{budget}_profile.txt")
    table, plain = [], None
    variants = args.variants.split(",")
    if "plain" in variants:
        subset = prompts[: args.plain_prompts]
        plain, stats = timed(model, tokenizer, subset, args.new_tokens, batch_size=64)
        result = {"bench": "generate", "variant": "plain: dataset order, batch 64, unmerged LoRA, dynamic cache",
                  **stats, **facts}
        write_result(f"{args.out_dir}/generate_plain.json", result)
        table.append(result)
    if "merged" in variants:  # merging alone: same order and batches as plain
        merged_plain, stats = timed(merged, tokenizer, prompts[: args.plain_prompts], args.new_tokens, batch_size=64)
        result = {"bench": "generate", "variant": "merged: dataset order, batch 64, merged LoRA, dynamic cache",
                  **stats, **facts, **equality(model, prompts, plain, merged_plain)}
        write_result(f"{args.out_dir}/generate_merged.json", result)
        table.append(result)
    for budget in map(int, args.budgets.split(",")):
        for variant in ("sorted", "static"):
            if variant not in variants:
                continue
            options = dict(batch_size=args.batch_cap, token_budget=budget, sort_by_length=True)
            if variant == "static":  # eager: auto-compile would recompile for every batch shape
                options.update(cache_implementation="static", disable_compile=True)
            try:
                results, stats = timed(merged, tokenizer, prompts, args.new_tokens, **options)
            except torch.OutOfMemoryError:
                print(f"{variant} {budget}: out of memory")
                torch.cuda.empty_cache()
                continue
            result = {"bench": "generate", "variant": f"{variant}: by length, token budget {budget}, batch cap "
                      f"{args.batch_cap}, merged LoRA, {'static' if variant == 'static' else 'dynamic'} cache",
                      **stats, **facts}
            if plain is not None:
                result.update(equality(model, prompts, plain, results))
            write_result(f"{args.out_dir}/generate_{variant}_{budget}.json", result)
            table.append(result)
    print(f"\n{'variant':<90} {'art/s':>7} {'tok/s':>8} {'test set s':>10} {'peak GiB':>8} {'equal':>9} {'eq|tie':>7}")
    for r in table:
        print(f"{r['variant']:<90} {r['articles_per_s']:>7} {r['new_tokens_per_s']:>8} "
              f"{r['projected_test_set_s']:>10} {r['peak_gib']:>8} {r.get('equal_to_plain', '-'):>9} "
              f"{r.get('equal_or_tie_share', '-'):>7}")


if __name__ == "__main__":
    main()
