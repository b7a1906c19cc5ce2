"""Whether a batch's prefill (compute-bound matmuls) can run beside another batch's decode steps (bound by memory:
the KV cache each step's attention reads, and the weights its small matmuls read) on one GPU, two streams.

Both are the fused Phi layer's kernels on the architecture's shapes (models/configs/phi-2 by default), without a
model: a decode step is, for each layer, q/k/v's matmul, kernels.row_attention over --rows rows of --prompt
slots, dense and fc2 adding into the rows, fc1 with its GELU epilogue, captured as one CUDA graph and replayed
--steps times; a prefill is the same four matmuls over --prefill-tokens tokens for each layer. Timed alone, then
both at once (decode on a high-priority stream, prefill on a low-priority one; and both of one priority), each
three times: if the GPU overlaps them, both at once take less than the two alone. --carveout N,...: prefill alone
and both at once again with the prefill's matmuls launched under torch._C._set_sm_carveout_experimental(N), which
asks cuBLAS to leave N of the GPU's SMs to other kernels. --green N,...: the GPU's SMs split between two CUDA
green contexts (driver API), N SMs for the decode steps (their graph captured on that context's stream) and the
rest for the prefill (with cuBLAS told of the N SMs it lacks, and without): each alone on its part, then both at
once.

    python bench/overlap.py --name phi2
    python bench/overlap.py --name phi2-carveout --carveout 16,32,48,66
    python bench/overlap.py --name phi2-green --green 32,48,64,80
"""
from __future__ import annotations

import argparse
import json
import statistics
from contextlib import contextmanager
from pathlib import Path

import torch

from common import ROOT, commit_facts, run_facts, write_result
from xsumtune.generate import kernels


def weights(hidden: int, ffn: int, layers: int):
    def w(n, k):
        return torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
    return [{"qkv": w(3 * hidden, hidden), "qkv_b": w(1, 3 * hidden)[0], "dense": w(hidden, hidden),
             "fc1": w(ffn, hidden), "fc1_b": w(1, ffn)[0], "fc2": w(hidden, ffn)} for _ in range(layers)]


def layer_matmuls(layer: dict, rows: torch.Tensor, attend=None) -> None:
    qkv = torch.addmm(layer["qkv_b"], rows, layer["qkv"].t())
    heads = attend(qkv) if attend is not None else qkv[:, :rows.shape[1]]
    rows.addmm_(heads, layer["dense"].t())
    rows.addmm_(torch._addmm_activation(layer["fc1_b"], rows, layer["fc1"].t(), use_gelu=True), layer["fc2"].t())


WAYS = {"decode": (True, False), "prefill": (False, True), "both": (True, True)}  # run()'s (decode, prefill)


def timed(run, ways, *streams) -> dict:
    """A prefill run first (cuBLAS picks its kernels for the carveout in force), then each way's median of three
    runs, in seconds."""
    run(False, True, *streams)
    return {way: round(statistics.median(run(*WAYS[way], *streams) for _ in range(3)), 4) for way in ways}


@contextmanager
def green_streams(first_sms: int):
    """Streams of two CUDA green contexts over disjoint SMs of the current device, first_sms SMs and the rest
    (one split of the device's SMs through the driver API: torch's GreenContext.create takes each context's
    SMs from the whole device, so two of them share SMs), and the two SM counts; both destroyed on leaving."""
    import ctypes
    torch.empty(1, device="cuda")  # the primary context current
    cuda = ctypes.CDLL("libcuda.so.1")

    def check(result: int, what: str) -> None:
        if result != 0:
            raise RuntimeError(f"{what}: CUresult {result}")
    device = ctypes.c_int()
    check(cuda.cuCtxGetDevice(ctypes.byref(device)), "cuCtxGetDevice")
    whole, group, rest = (ctypes.create_string_buffer(1024) for _ in range(3))  # CUdevResource, opaque
    check(cuda.cuDeviceGetDevResource(device, whole, 1), "cuDeviceGetDevResource")  # CU_DEV_RESOURCE_TYPE_SM
    check(cuda.cuDevSmResourceSplitByCount(group, ctypes.byref(ctypes.c_uint(1)), whole, rest, 0, first_sms),
          "cuDevSmResourceSplitByCount")
    made, streams, counts = [], [], []
    try:
        for part in (group, rest):
            counts.append(int.from_bytes(part.raw[96:100], "little"))  # CUdevSmResource.smCount, after 96 bytes
            desc, context, stream = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
            check(cuda.cuDevResourceGenerateDesc(ctypes.byref(desc), part, 1), "cuDevResourceGenerateDesc")
            check(cuda.cuGreenCtxCreate(ctypes.byref(context), desc, device, 1), "cuGreenCtxCreate")  # default stream
            made.append([context, None])  # destroyed on leaving even if its stream can't be made
            check(cuda.cuGreenCtxStreamCreate(ctypes.byref(stream), context, 1, 0),  # 1: CU_STREAM_NON_BLOCKING
                  "cuGreenCtxStreamCreate")
            made[-1][1] = stream
            streams.append(torch.cuda.ExternalStream(stream.value))
        yield streams[0], streams[1], counts
    finally:
        torch.cuda.synchronize()
        for context, stream in made:
            if stream is not None:
                cuda.cuStreamDestroy_v2(stream)
            cuda.cuGreenCtxDestroy(context)


def green_split(count: int, decode_step, run, carveout: list) -> dict:
    """Decode steps on a green context of count SMs, prefill on one of the rest: each alone, both at once, and
    the prefill with cuBLAS's carveout at count (its persistent kernels sized to the SMs its context has)."""
    try:
        with green_streams(count) as (decode_stream, prefill_stream, (decode_sms, prefill_sms)):
            with torch.cuda.stream(decode_stream):
                decode_step()
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=decode_stream):
                decode_step()
            part = {"decode_sms": decode_sms, "prefill_sms": prefill_sms}
            part.update(timed(run, WAYS, decode_stream, prefill_stream, graph))
            carveout[0] = count
            part.update({f"{way}_carveout": seconds for way, seconds in
                         timed(run, ("prefill", "both"), decode_stream, prefill_stream, graph).items()})
            graph.reset()
            return part
    except Exception as error:  # noqa: BLE001 - recorded: what this torch or driver can't do
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        carveout[0] = None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="models/configs/phi-2")
    parser.add_argument("--rows", type=int, default=143, help="decode rows (the phi2 fast configuration's mean batch)")
    parser.add_argument("--prompt", type=int, default=510, help="slots each row's attention reads")
    parser.add_argument("--steps", type=int, default=59)
    parser.add_argument("--prefill-tokens", type=int, default=32000)
    parser.add_argument("--prefills", type=int, default=4, help="prefill calls of every layer")
    parser.add_argument("--carveout", default="", help="comma-separated SM counts cuBLAS leaves free in prefill")
    parser.add_argument("--green", default="", help="comma-separated SM counts of the decode steps' green context")
    parser.add_argument("--name", default="phi2")
    parser.add_argument("--commit")
    parser.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    arch = json.loads((ROOT / args.arch / "config.json").read_text())
    hidden, heads, layers = arch["hidden_size"], arch["num_attention_heads"], arch["num_hidden_layers"]
    ffn, dim = arch["intermediate_size"], hidden // arch["num_attention_heads"]
    torch.manual_seed(0)
    params = weights(hidden, ffn, layers)
    slots = args.prompt + args.steps + 1
    caches = [(torch.randn(args.rows, heads, slots, dim, device="cuda", dtype=torch.bfloat16),
               torch.randn(args.rows, heads, slots, dim, device="cuda", dtype=torch.bfloat16)) for _ in range(2)]
    first = torch.zeros(args.rows, dtype=torch.long, device="cuda")
    last = torch.full((1,), args.prompt, dtype=torch.long, device="cuda")
    rows = torch.randn(args.rows, hidden, device="cuda", dtype=torch.bfloat16)
    tokens = torch.randn(args.prefill_tokens, hidden, device="cuda", dtype=torch.bfloat16)

    def decode_step():
        for i, layer in enumerate(params):
            key, value = caches[i % 2]

            def attend(qkv, key=key, value=value):
                query = qkv[:, :hidden].view(args.rows, heads, 1, dim)
                return kernels.row_attention(query, key, value, first, last, dim ** -0.5).view(args.rows, hidden)
            layer_matmuls(layer, rows, attend)

    carveout = [None]

    def prefill():
        before = torch._C._get_sm_carveout_experimental()
        torch._C._set_sm_carveout_experimental(carveout[0])
        try:
            for _ in range(args.prefills):
                for layer in params:
                    layer_matmuls(layer, tokens)
        finally:
            torch._C._set_sm_carveout_experimental(before)

    high, low, plain = torch.cuda.Stream(priority=-1), torch.cuda.Stream(priority=0), torch.cuda.Stream(priority=0)
    with torch.cuda.stream(high):
        decode_step()
        prefill()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=high):
        decode_step()

    def run(decode: bool, pre: bool, decode_stream=high, prefill_stream=low, decode_graph=None) -> float:
        decode_graph = decode_graph or graph
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for stream in (decode_stream, prefill_stream):
            stream.wait_event(start)
        if pre:
            with torch.cuda.stream(prefill_stream):
                prefill()
        if decode:
            with torch.cuda.stream(decode_stream):
                for _ in range(args.steps):
                    decode_graph.replay()
        for stream in (decode_stream, prefill_stream):
            torch.cuda.current_stream().wait_stream(stream)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000

    times = timed(run, WAYS)
    times["both_equal_priority"] = timed(run, ("both",), plain)["both"]  # decode on a stream of prefill's priority
    for count in [int(n) for n in args.carveout.split(",") if n]:
        carveout[0] = count
        times.update({f"{way}_carveout_{count}": seconds for way, seconds in timed(run, ("prefill", "both")).items()})
    carveout[0] = None
    green = {}
    for count in [int(n) for n in args.green.split(",") if n]:
        green[count] = green_split(count, decode_step, run, carveout)
    alone = times["decode"] + times["prefill"]
    prefill_flops = 2 * args.prefill_tokens * args.prefills * layers * hidden * (3 * hidden + hidden + 2 * ffn)
    result = {"bench": "overlap", **commit_facts(args.commit), "arch": args.arch, "rows": args.rows,
              "prompt_slots": args.prompt, "steps": args.steps, "prefill_tokens": args.prefill_tokens,
              "prefills": args.prefills, "seconds": times, "alone_summed": round(alone, 4),
              "saved_share": round(1 - times["both"] / alone, 3),
              "saved_share_carveout": {key.rsplit("_", 1)[1]: round(1 - value / alone, 3)
                                       for key, value in times.items() if key.startswith("both_carveout")},
              "green": {count: {**part, "saved_share": round(1 - part["both"] / alone, 3) if "both" in part else None}
                        for count, part in green.items()},
              "decode_ms_a_step_alone": round(times["decode"] / args.steps * 1000, 3),
              "prefill_tflops_alone": round(prefill_flops / times["prefill"] / 1e12, 1), **run_facts()}
    write_result(Path(args.out_dir) / f"overlap_{args.name}.json", result)


if __name__ == "__main__":
    main()
