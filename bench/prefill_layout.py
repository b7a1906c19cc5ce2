"""Whether the prefill's rows would run faster packed end to end than right-padded in groups, on a GPU, no model.

The sample's test prompts go through the stage's build_prompts and plan_batches (the profile's params), then each
batch into groups two ways: right-padded, as prefill runs them (graphs.prefill_groups: rows x the group's longest
prompt within --padded tokens; each group's attention cuDNN's causal SDPA over its padded rows), and packed (rows
laid end to end within --packed tokens, no padding; attention through PyTorch's varlen_attn over each row's
bounds). For each way and group size, the four matmuls of a fused Phi layer (q/k/v with its bias, dense and fc2
adding into the rows, fc1 with its GELU epilogue) over every group's tokens, and the attention over every group,
on the architecture's shapes with random bf16 weights, times its layer count: the median of --reps passes over all
groups. Rotary, LayerNorm, cache writes and the head are left out (the same work either way).

    python bench/prefill_layout.py --profile phi2-random --set generate.token_budget=160000 --name phi2-b160k
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch
from torch.nn.functional import scaled_dot_product_attention

from common import ROOT, commit_facts, run_facts, stage_prompts, write_result
from xsumtune.generate.generation import plan_batches
from xsumtune.generate.graphs import prefill_groups


def packed_groups(lengths: list[int], tokens: int) -> list[list[int]]:
    """The rows' lengths, longest first, in groups of at most tokens real tokens (a row alone may exceed it)."""
    groups, current, used = [], [], 0
    for length in sorted(lengths, reverse=True):
        if current and used + length > tokens:
            groups.append(current)
            current, used = [], 0
        current.append(length)
        used += length
    return [*groups, current] if current else groups


def seconds(calls: list, reps: int) -> float:
    """The median over reps of one pass through calls, after one untimed pass."""
    for call in calls:
        call()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for call in calls:
            call()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="phi2-random")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a params override, key=value")
    parser.add_argument("--arch", default="models/configs/phi-2")
    parser.add_argument("--padded", default="8000,32000", help="prefill_tokens values, right-padded groups")
    parser.add_argument("--packed", default="16000,32000,64000", help="tokens a packed group holds")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--name", required=True)
    parser.add_argument("--commit")
    parser.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    from torch.nn.attention.varlen import varlen_attn

    config, _, prompts = stage_prompts(args.profile, tuple(args.overrides))
    e = config.generate
    lengths = [len(p["prompt_ids"]) for p in prompts]
    batches = plan_batches(lengths, batch_size=e.batch_size, token_budget=e.token_budget,
                           max_new_tokens=e.max_new_tokens, sort_by_length=e.sort_by_length)
    arch = json.loads((ROOT / args.arch / "config.json").read_text())
    hidden, heads, layers, ffn = (arch[k] for k in ("hidden_size", "num_attention_heads", "num_hidden_layers",
                                                    "intermediate_size"))
    dim = hidden // heads
    torch.manual_seed(0)

    def w(*shape):
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16) * 0.02
    qkv, qkv_b, dense, fc1, fc1_b, fc2 = w(3 * hidden, hidden), w(3 * hidden), w(hidden, hidden), w(ffn, hidden), \
        w(ffn), w(hidden, ffn)

    def matmuls(tokens: int):
        rows, attended = w(tokens, hidden), w(tokens, hidden)

        def run():
            torch.addmm(qkv_b, rows, qkv.t())
            rows.addmm_(attended, dense.t())
            rows.addmm_(torch._addmm_activation(fc1_b, rows, fc1.t(), use_gelu=True), fc2.t())
        return run

    def padded_attention(group: list[int]):
        q, k, v = (w(len(group), max(group), heads, dim).transpose(1, 2) for _ in range(3))
        return lambda: scaled_dot_product_attention(q, k, v, is_causal=True)

    def packed_attention(group: list[int]):
        q, k, v = (w(sum(group), heads, dim) for _ in range(3))
        bounds = torch.tensor([0, *itertools.accumulate(group)], device="cuda", dtype=torch.int32)
        return lambda: varlen_attn(q, k, v, bounds, bounds, max(group), max(group), window_size=(-1, 0))

    ways = [("padded", int(n)) for n in args.padded.split(",") if n] + \
        [("packed", int(n)) for n in args.packed.split(",") if n]
    runs = {}
    for way, size in ways:
        groups = []
        for batch in batches:
            batch_lengths = [lengths[i] for i in batch]
            groups += [[batch_lengths[row] for row in group] for group in prefill_groups(batch_lengths, size)] \
                if way == "padded" else packed_groups(batch_lengths, size)
        run = [len(group) * max(group) if way == "padded" else sum(group) for group in groups]
        matmul = seconds([matmuls(tokens) for tokens in run], args.reps) * layers
        attention = seconds([(padded_attention if way == "padded" else packed_attention)(group) for group in groups],
                            args.reps) * layers
        runs[f"{way}_{size}"] = {"groups": len(groups), "tokens_run": sum(run),
                                 "matmul_s": round(matmul, 3), "attention_s": round(attention, 3),
                                 "both_s": round(matmul + attention, 3)}
        print(f"{args.name} {way} {size}: {runs[f'{way}_{size}']}", flush=True)
        torch.cuda.empty_cache()
    result = {"bench": "prefill_layout", "profile": args.profile, "overrides": args.overrides,
              **commit_facts(args.commit), "arch": args.arch, "articles": len(lengths),
              "prompt_tokens": sum(lengths), "batches": len(batches), "reps": args.reps, "runs": runs, **run_facts()}
    write_result(Path(args.out_dir) / f"prefill_layout_{args.name}.json", result)


if __name__ == "__main__":
    main()
