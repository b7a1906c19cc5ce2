"""Generation throughput of the evaluate stage's code on Phi-2's architecture (random weights, bf16).

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

from common import TOKENIZER, cycle_seeded, phi2_random, run_facts, write_result, xsum_test_rows
from xsumtune.generation import generate_summaries
from xsumtune.tokenization import PromptEncoder, load_tokenizer

TEST_SET = 11_334  # XSum test articles


def timed(model, tokenizer, prompts, new_tokens, **options):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    results = generate_summaries(model, tokenizer, prompts, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 **options)
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=2048)
    parser.add_argument("--plain-prompts", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=60)
    parser.add_argument("--max-seq-len", type=int, default=1126)
    parser.add_argument("--variants", default="plain,sorted,static")
    parser.add_argument("--budgets", default="160000")
    parser.add_argument("--batch-cap", type=int, default=1024)
    parser.add_argument("--out-dir", default="bench/results")
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

    table, plain = [], None
    variants = args.variants.split(",")
    if "plain" in variants:
        subset = prompts[: args.plain_prompts]
        plain, stats = timed(model, tokenizer, subset, args.new_tokens, batch_size=64)
        result = {"bench": "generate", "variant": "plain: dataset order, batch 64, unmerged LoRA, dynamic cache",
                  **stats, **facts}
        write_result(f"{args.out_dir}/generate_plain.json", result)
        table.append(result)
    for budget in map(int, args.budgets.split(",")):
        for variant in ("sorted", "static"):
            if variant not in variants:
                continue
            options = dict(batch_size=args.batch_cap, token_budget=budget, sort_by_length=True)
            if variant == "static":  # eager: auto-compile would recompile for every batch shape
                options.update(cache_implementation="static", disable_compile=True)
            results, stats = timed(merged, tokenizer, prompts, args.new_tokens, **options)
            result = {"bench": "generate", "variant": f"{variant}: by length, token budget {budget}, batch cap "
                      f"{args.batch_cap}, merged LoRA, {'static' if variant == 'static' else 'dynamic'} cache",
                      **stats, **facts}
            if plain is not None:
                same = sum(a.token_ids == b.token_ids for a, b in zip(plain, results))
                result["equal_to_plain"] = f"{same}/{len(plain)}"
                result["equal_to_plain_share"] = round(same / len(plain), 4)
            write_result(f"{args.out_dir}/generate_{variant}_{budget}.json", result)
            table.append(result)
    print(f"\n{'variant':<90} {'art/s':>7} {'tok/s':>8} {'test set s':>10} {'peak GiB':>8} {'equal':>9}")
    for r in table:
        print(f"{r['variant']:<90} {r['articles_per_s']:>7} {r['new_tokens_per_s']:>8} "
              f"{r['projected_test_set_s']:>10} {r['peak_gib']:>8} {r.get('equal_to_plain', '-'):>9}")


if __name__ == "__main__":
    main()
