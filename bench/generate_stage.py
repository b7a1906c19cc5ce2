"""Generation throughput of the generate stage's own code on a profile's params: `generate.cache: static`
(transformers' generate) against `graphs` (xsumtune/generate/graphs.py), on the same model and prompts.

The model is the profile's architecture with random weights (4-bit, then dequantized, as model.quantization
and generate.dequantize say; its LoRA applied, B drawn non-zero, merged or not as generate.merge_adapter
says), or real weights from --weights DIR (a Hugging Face directory, models/base after the base_model
stage). Prompts: every test article of the
sample, built by the stage's build_prompts. Each cache runs `--reps` times over all of them, two ways:
  stage:  run_system, exactly what the generate stage calls (each row stops at eos or its line's end)
  forced: every row makes exactly max_new_tokens tokens (no eos, no line-end stop), the other options the
          profile's: the fixed-work figure the speed goals are set in
The JSON holds each repetition (timed as the stage runs: nothing waits for the GPU but what the stage's own
code waits for), the median and spread, and how many articles' tokens equal the static path's (and of those that
differ, how many first differ at a bf16 tie of the logits), and where the time went, from one more run of the
graphs loop: its prefill calls timed on their own (the GPU synchronized around each, which the stage never
does, so that run is slower), their tokens (rows x width as computed, and the prompts' own) and the rate that
makes in model FLOPs (2 x the layers' parameters a token). --torch-profile runs the last cache's last way once
more under torch.profiler and writes where the time went
(prefill, decode, capture, dropping finished rows, kernels) to generate_stage_<name>_profile.txt.

    python bench/generate_stage.py --profile smol --model-config models/configs/smollm2-135m --name smol
    python bench/generate_stage.py --profile phi2-random --name phi2-random
    python bench/generate_stage.py --profile smol --model-config models/configs/smollm2-135m --caches graphs,candidate \
        --candidate generate.decode_padding=0.2 --name smol-decode-padding   # a graphs param against graphs
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import time

import torch

from common import ROOT, commit_facts, gpu_time, idle_gaps, profile_config, run_facts, write_result, xsum_test_rows
from generate_throughput import equality
from xsumtune.data.tokenization import load_tokenizer
from xsumtune.generate import generation, graphs
from xsumtune.generate.generation import generate_summaries
from xsumtune.generate.systems import build_prompts, decoding_options, run_system
from xsumtune.model.loading import apply_lora, dequantize, load_base_model


CUDA = torch.cuda.is_available()


def timed(run) -> tuple[list, float]:
    if CUDA:
        torch.cuda.synchronize()
    start = time.perf_counter()
    results = run()
    if CUDA:
        torch.cuda.synchronize()
    return results, time.perf_counter() - start


class PrefillClock:
    """graphs.prefill wrapped: tokens, and while timing, seconds (the GPU synchronized before and after each
    call), summed. causal: prefill's own way (right-padded rows, each group cut to its longest prompt); else one
    masked call."""

    def __init__(self, causal: bool):
        self.inner, self.causal, self.seconds, self.computed, self.real = graphs.prefill, causal, 0.0, 0, 0
        self.timing = False
        graphs.prefill = self

    def __call__(self, model, cache, input_ids, attention_mask, positions, prefill_tokens=None, lengths=None,
                 **kwargs):
        if not self.timing:  # a timed repetition: prefill as the stage runs it, nothing added
            return self.inner(model, cache, input_ids, attention_mask, positions, prefill_tokens, lengths,
                              causal=self.causal, **kwargs)
        if CUDA:
            torch.cuda.synchronize()
        start = time.perf_counter()
        logits = self.inner(model, cache, input_ids, attention_mask, positions, prefill_tokens, lengths,
                            causal=self.causal, **kwargs)
        if CUDA:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        if lengths is None:  # greedy_decode hands them on
            lengths = attention_mask.sum(-1).tolist()
        self.real += sum(lengths)
        if self.causal:
            groups = graphs.prefill_groups(lengths, prefill_tokens)
            self.computed += sum(len(group) * max(lengths[row] for row in group) for group in groups)
        else:
            self.computed += input_ids.numel()
        return logits

    def take(self) -> tuple[float, int, int]:
        taken = self.seconds, self.computed, self.real
        self.seconds, self.computed, self.real = 0.0, 0, 0
        return taken


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a params override, key=value")
    parser.add_argument("--model-config", help="a config directory: the architecture, random weights "
                        "(default: the profile's model.name)")
    parser.add_argument("--tokenizer", help="default: the profile's model.tokenizer")
    parser.add_argument("--weights", help="a model directory with real weights (default: random weights)")
    parser.add_argument("--keep-finished", action="store_true", help="graphs: finished rows stay in the batch "
                        "to its end (the loop before rows were dropped), for comparison")
    parser.add_argument("--caches", default="static,graphs", help="static, graphs, and candidate: graphs with "
                        "the --candidate generate params")
    parser.add_argument("--candidate", action="append", default=[], metavar="generate.KEY=VALUE",
                        help="a generate param for the candidate cache (repeatable); its tokens are compared "
                        "with graphs' (run it after graphs)")
    parser.add_argument("--ways", default="stage,forced")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--articles", type=int, help="the first N test articles only (default: all)")
    parser.add_argument("--static-reps", type=int, help="repetitions of the static path (default: --reps)")
    parser.add_argument("--masked-prefill", action="store_true", help="graphs: prefill as one masked call over "
                        "the left-padded batch (before prefill ran right-padded rows with causal attention)")
    parser.add_argument("--torch-profile", action="store_true")
    parser.add_argument("--name", required=True)
    parser.add_argument("--commit")
    parser.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()

    config = profile_config(args.profile, tuple(args.overrides))
    if args.keep_finished:
        graphs.greedy_decode = functools.partial(graphs.greedy_decode, drop_below=0)
        generation.greedy_decode = graphs.greedy_decode
    model_config = dataclasses.replace(config.model, weights="pretrained" if args.weights else "random",
                                       name=str(ROOT / (args.weights or args.model_config or config.model.name)),
                                       tokenizer=str(ROOT / (args.tokenizer or config.model.tokenizer)))
    config = dataclasses.replace(config, model=model_config)
    tokenizer = load_tokenizer(model_config.tokenizer)
    prompts = build_prompts(config, tokenizer, xsum_test_rows()[:args.articles])
    base = load_base_model(model_config, config.seed)
    if config.generate.dequantize:
        base = dequantize(base, model_config)
    model = apply_lora(base, config.lora, config.seed)
    with torch.no_grad():  # real weights keep B at zero: the base model's own summaries, which end naturally
        for name, param in model.named_parameters():
            if "lora_B" in name and not args.weights:
                param.normal_(0, 0.02)
    model = (model.merge_and_unload() if config.generate.merge_adapter else model).eval()
    e = config.generate
    lengths = [len(p["prompt_ids"]) for p in prompts]
    facts = commit_facts(args.commit)
    record = {"bench": "generate_stage", "profile": args.profile, "overrides": args.overrides, **facts,
              "finished_rows": "kept to the batch's end" if args.keep_finished else "dropped",
              "prefill": "one masked call" if args.masked_prefill else "right-padded, causal",
              "model": f"{model_config.name} ({model_config.weights} weights), {model_config.dtype}, quantization "
                       f"{model_config.quantization}{', dequantized' if e.dequantize and model_config.quantization != 'none' else ''}, LoRA {'merged' if e.merge_adapter else 'unmerged'}",
              "articles": len(prompts), "prompt_tokens_mean": round(sum(lengths) / len(lengths), 1),
              "prompt_tokens_max": max(lengths), "max_new_tokens": e.max_new_tokens,
              "token_budget": e.token_budget, "batch_size": e.batch_size, **run_facts(), "runs": {}}

    if any(not item.startswith("generate.") for item in args.candidate):
        parser.error("--candidate takes generate params only (generate.KEY=VALUE)")
    # the candidate's generate params composed and checked as the stages' are: the profile, overrides, candidate
    candidate = profile_config(args.profile, (*args.overrides, *args.candidate)).generate if args.candidate else e

    def way(cache: str, how: str):
        generate = dataclasses.replace(candidate, cache="graphs") if cache == "candidate" else \
            dataclasses.replace(e, cache=cache)
        if how == "stage":
            return lambda: run_system(dataclasses.replace(config, generate=generate), model, tokenizer, prompts,
                                      f"{cache} stage")
        options = {**decoding_options(generate), "min_new_tokens": e.max_new_tokens}
        return lambda: generate_summaries(model, tokenizer, prompts, batch_size=generate.batch_size,
                                          max_new_tokens=e.max_new_tokens, token_budget=generate.token_budget,
                                          sort_by_length=generate.sort_by_length, stop_at_line_end=False,
                                          desc=f"{cache} forced", cudnn_attention=generate.cudnn_attention, **options)

    generate_summaries(model, tokenizer, prompts[:8], batch_size=8, max_new_tokens=4)  # kernels, handles
    clock = PrefillClock(causal=not args.masked_prefill)
    # prefill's FLOPs: 2 a parameter a token, the embedding table (looked up) and the head (last position) aside
    outside = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings()) for p in m.parameters()}
    parameters = sum(p.numel() for p in model.parameters() if id(p) not in outside)
    outputs = {}
    for how in args.ways.split(","):
        for cache in args.caches.split(","):
            if CUDA:
                torch.cuda.reset_peak_memory_stats()
            seconds, results = [], None
            for _ in range(args.static_reps or args.reps if cache == "static" else args.reps):
                results, s = timed(way(cache, how))
                seconds.append(round(s, 2))
            outputs[(how, cache)] = results
            rates = [round(len(prompts) / s, 1) for s in seconds]
            run = {"seconds": seconds, "articles_per_s": rates, "articles_per_s_median": statistics.median(rates),
                   "spread": round(max(rates) - min(rates), 1),
                   "new_tokens": sum(r.tokens for r in results),
                   "natural_stops": sum(not r.stopped_by_cap for r in results),
                   "failed": sum(r.error is not None for r in results),
                   "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if CUDA else None}
            if cache != "static":  # one more run, its prefill timed apart: where the time goes
                clock.take()
                clock.timing = True
                _, s = timed(way(cache, how))
                clock.timing = False
                taken, computed, real = clock.take()
                tflops = round(2 * parameters * computed / taken / 1e12, 1) if taken else 0
                run["split_run"] = {"seconds": round(s, 2), "prefill_seconds": round(taken, 2),
                                    "rest_seconds": round(s - taken, 2),
                                    "prefill_tokens": {"computed": computed, "prompts": real}, "prefill_tflops": tflops}
            reference = "graphs" if cache == "candidate" else "static"
            if (how, reference) in outputs and cache != reference:
                run.update({"compared_with": reference, **equality(model, prompts, outputs[(how, reference)], results)})
            record["runs"][f"{how}/{cache}"] = run
            print(f"{args.name} {how}/{cache}: {run}", flush=True)
            # kept as each run ends: a later run that fails (out of memory, say) leaves the earlier ones on record
            write_result(f"{args.out_dir}/generate_stage_{args.name}.json", record, echo=False)
    write_result(f"{args.out_dir}/generate_stage_{args.name}.json", record)
    if args.torch_profile:
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if CUDA else [])
        with torch.profiler.profile(activities=activities) as profiler:
            _, wall = timed(way(cache, how))
        table = profiler.key_averages()
        gpu, launches = gpu_time(table)
        with open(f"{args.out_dir}/generate_stage_{args.name}_profile.txt", "w") as out:
            out.write(f"{args.name} at {facts['commit']}: {cache} {how}, {len(prompts)} articles, one run under "
                      f"torch.profiler: {wall:.3f} s wall, {gpu:.3f} s of GPU kernel time ({gpu / wall:.0%} busy), "
                      f"{launches} kernel launches\n")
            if CUDA:
                out.write(idle_gaps(profiler.events(), ("prefill", "decode", "capture", "drop finished rows")))
            for key in ("cpu_time_total", "self_cuda_time_total" if CUDA else "self_cpu_time_total"):
                out.write(table.table(sort_by=key, row_limit=40, max_name_column_width=60) + "\n")


if __name__ == "__main__":
    main()
