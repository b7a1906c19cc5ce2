"""One decode step's attention, on the shapes a profile's generate stage makes: which kernel, and how much of
the static cache it reads.

The sample's test articles go through the stage's build_prompts and plan_batches (the profile's batch size,
token budget, max_new_tokens); each batch gives one decode step's query [rows, heads, 1, head_dim] and its
static cache [rows, kv_heads, longest prompt + max_new_tokens, head_dim], filled (mask true) from each row's
first prompt slot to the step --step. Random bf16 values: a kernel's time doesn't depend on them.

Timed per batch and way, each as one CUDA graph replayed --reps times (as the graphs loop runs it), median of
three timings: the stage's decode attention (xsumtune.generate.graphs.grouped_decode_attention) under each SDPA
backend (`default`: PyTorch's pick) x the profile's generate.decode_padding and each --padding value (None:
one call over every slot); and `rows`, the Triton kernel of generate.triton_kernels (kernels.row_attention), each
row reading its own slots only, with kernels.ROW_ATTENTION's launch and each --row-launch (its key and value
bytes over the time give the memory rate it reaches). Every way's output is compared with the math backend's
over every slot. --ways rows times the Triton kernel only.

    python bench/decode_attention.py --profile smol --tokenizer models/tokenizers/smollm2 \\
        --arch models/configs/smollm2-135m
    python bench/decode_attention.py --profile phi2-random --ways rows --padding '' \
        --row-launch 64/4/3/heads --row-launch 64/4/3/rows/split   # BLOCK/num_warps/num_stages/grid order[/split]
"""
from __future__ import annotations

import argparse
from contextlib import nullcontext
import json
import statistics
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from common import ROOT, commit_facts, run_facts, stage_prompts, write_result
from xsumtune.generate.generation import plan_batches
from xsumtune.generate import kernels
from xsumtune.generate.graphs import decode_groups, grouped_decode_attention

BACKENDS = {"default": None, "cudnn": SDPBackend.CUDNN_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "math": SDPBackend.MATH}


class _Module:  # what grouped_decode_attention reads of the attention module
    is_causal = True
    training = False


def graph_time(run, reps: int) -> float:
    """Milliseconds per call of run(), captured as one CUDA graph and replayed reps times (median of 3)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    times = []
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / reps)
    graph.reset()
    return round(statistics.median(times), 4)


def batch_case(lengths: list[int], max_new_tokens: int, step: int, heads: int, kv_heads: int, dim: int):
    rows, width = len(lengths), max(lengths)
    slots = width + max_new_tokens
    query = torch.randn(rows, heads, 1, dim, device="cuda", dtype=torch.bfloat16)
    key = torch.randn(rows, kv_heads, slots, dim, device="cuda", dtype=torch.bfloat16)
    value = torch.randn_like(key)
    mask = torch.zeros(rows, 1, 1, slots, dtype=torch.bool, device="cuda")
    for row, length in enumerate(lengths):
        mask[row, 0, 0, width - length:width + step] = True
    return query, key, value, mask


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smol")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--tokenizer", help="a tokenizer directory (default: the profile's model.tokenizer)")
    parser.add_argument("--arch", help="a model config directory (default: the profile's model.name)")
    parser.add_argument("--padding", default="0.1,0.2,0.3", help="comma-separated decode_padding values")
    parser.add_argument("--step", type=int, default=30, help="new tokens in the cache so far")
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--ways", default="sdpa,rows", help="sdpa (every backend x padding), rows (the Triton kernel)")
    parser.add_argument("--row-launch", action="append", default=[], metavar="BLOCK/WARPS/STAGES/rows|heads[/split]",
                        help="another launch of the Triton kernel (grid order: rows or heads first; split: a head "
                        "dim that is no power of two read as two tiles that are)")
    parser.add_argument("--commit")
    parser.add_argument("--name", default="")
    parser.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    config, _, prompts = stage_prompts(args.profile, args.overrides, args.tokenizer)
    arch = json.loads((Path(ROOT / (args.arch or config.model.name)) / "config.json").read_text())
    heads, kv_heads = arch["num_attention_heads"], arch.get("num_key_value_heads") or arch["num_attention_heads"]
    dim = arch.get("head_dim") or arch["hidden_size"] // heads
    lengths = [len(p["prompt_ids"]) for p in prompts]
    e = config.generate
    batches = plan_batches(lengths, batch_size=e.batch_size, token_budget=e.token_budget,
                           max_new_tokens=e.max_new_tokens, sort_by_length=e.sort_by_length, copies=e.mbr_candidates)
    paddings = [e.decode_padding, *(float(v) for v in args.padding.split(",") if v.strip())]
    launches = {"rows": {}}
    for item in args.row_launch:
        block, warps, stages, order, *split = item.split("/")
        launches[f"rows-{item}"] = {"BLOCK": int(block), "num_warps": int(warps), "num_stages": int(stages),
                                    "HEADS_FIRST": order == "heads", "SPLIT_DIM": split == ["split"]}
    ways_run = set(args.ways.split(","))
    module = _Module()
    results = []
    for batch in batches:
        rows = [lengths[i] for i in batch]
        query, key, value, mask = batch_case(rows, e.max_new_tokens, args.step, heads, kv_heads, dim)
        with sdpa_kernel([SDPBackend.MATH]):
            reference = grouped_decode_attention(module, query, key, value, mask)[0].float()
        ways = {}
        for backend in BACKENDS if "sdpa" in ways_run else ():
            for padding in paddings:
                groups = decode_groups(rows, padding) if padding is not None else None
                def run(groups=groups, case=(query, key, value, mask), backend=backend):
                    with nullcontext() if backend == "default" else sdpa_kernel([BACKENDS[backend]]):
                        return grouped_decode_attention(module, *case, decode_groups=groups)[0]
                way = f"{backend}-{padding}"
                try:
                    out = run().float()
                    ways[way] = {"ms": graph_time(run, args.reps), "groups": None if groups is None else len(groups),
                                 "slots_read": sum((g.stop - g.start) * (key.shape[2] - g.first_slot) for g in groups)
                                 if groups else len(rows) * key.shape[2],
                                 "max_abs_diff_vs_math": round(float((out - reference).abs().max()), 5)}
                except RuntimeError as error:
                    ways[way] = {"error": str(error).splitlines()[0][:200]}
                    torch.cuda.synchronize()
        first = torch.tensor([key.shape[2] - e.max_new_tokens - length for length in rows], device="cuda")
        last = torch.tensor([key.shape[2] - e.max_new_tokens + args.step - 1], device="cuda")
        read = sum(rows) + len(rows) * args.step
        for way, launch in launches.items() if "rows" in ways_run else ():
            def run_rows(case=(query, key, value), first=first, last=last, launch=launch):
                return kernels.row_attention(*case, first, last, dim ** -0.5, **launch)
            out = run_rows().float()
            ms = graph_time(run_rows, args.reps)
            ways[way] = {"ms": ms, "slots_read": read, "gb_per_s": round(read * kv_heads * dim * 2 * 2 / ms / 1e6, 1),
                         "max_abs_diff_vs_math": round(float((out - reference).abs().max()), 5)}
        results.append({"rows": len(rows), "slots": key.shape[2], "filled": read,
                        "ways": ways})
        print(json.dumps(results[-1]), flush=True)
    totals = {way: round(sum(b["ways"][way]["ms"] for b in results if "ms" in b["ways"].get(way, {})), 4)
              for way in results[0]["ways"]}
    print(json.dumps({"ms_a_step_summed_over_batches": totals}), flush=True)
    name = f"decode_attention_{args.profile}{'-' + args.name if args.name else ''}"
    write_result(Path(args.out_dir) / f"{name}.json", {
        "bench": "decode_attention", "profile": args.profile, "overrides": args.overrides,
        **commit_facts(args.commit), "heads": heads, "kv_heads": kv_heads, "head_dim": dim, "step": args.step,
        "reps": args.reps, "launches": launches, "ms_a_step_summed_over_batches": totals, "batches": results,
        **run_facts()})


if __name__ == "__main__":
    main()
