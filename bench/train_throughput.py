"""Training throughput of the train stage's code (Trainer + LoRA) on Phi-2's architecture, random weights.

Examples: the real XSum sample (validation + test files) under the default template, max_seq_len 1126,
so token lengths follow XSum's. Reports real (non-pad) tokens/s, samples/s, model FLOPs utilisation
against 790 TFLOP/s (LoRA: about 4 x 2.78e9 FLOPs per token, plus attention) and peak GPU memory,
timed over optimizer steps after warm-up. One JSON per variant.

    python bench/train_throughput.py --variants reference,bf16 --out-dir bench/results
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch
from transformers import Trainer, TrainerCallback

from common import TOKENIZER, cycle_seeded, phi2_random, profile_config, profile_table, run_facts, write_result
from xsumtune.data.preprocessing import prepare_splits
from xsumtune.data.tokenization import load_tokenizer
from xsumtune.model.loading import apply_lora
from xsumtune.train.training import CompletionCollator, to_dataset, training_arguments

PEAK_FLOPS = 790e12
PARAMS = 2_779_683_840
LAYERS, HIDDEN = 32, 2560

VARIANTS = {
    # the reference experiment's recipe
    "reference": dict(quantization="nf4", dtype="float16", train=dict(batch_size=2, grad_accum=8,
                      optimizer="paged_adamw_8bit", gradient_checkpointing=True)),
    # plain bf16 LoRA, padding to the longest in the batch
    "bf16": dict(quantization="none", dtype="bfloat16", train=dict(batch_size=8, grad_accum=2,
                 optimizer="adamw_torch", gradient_checkpointing=False)),
    # + batches of similar lengths and fused AdamW
    "bf16-grouped": dict(quantization="none", dtype="bfloat16", train=dict(batch_size=8, grad_accum=2,
                         optimizer="adamw_torch_fused", gradient_checkpointing=False, group_by_length=True)),
    "bf16-grouped-16": dict(quantization="none", dtype="bfloat16", train=dict(batch_size=16, grad_accum=1,
                            optimizer="adamw_torch_fused", gradient_checkpointing=False, group_by_length=True)),
    # + gelu as one fused kernel, adapter weights in bf16 (no float32 casts around every LoRA matmul)
    "bf16-fast": dict(quantization="none", dtype="bfloat16", fused_gelu=True, lora_fp32=False,
                      train=dict(batch_size=8, grad_accum=2, optimizer="adamw_torch_fused",
                                 gradient_checkpointing=False, group_by_length=True)),
    "nf4-fast": dict(quantization="nf4", dtype="bfloat16", fused_gelu=True, lora_fp32=False,
                     train=dict(batch_size=8, grad_accum=2, optimizer="adamw_torch_fused",
                                gradient_checkpointing=True, group_by_length=True)),
    "bf16-fast-16": dict(quantization="none", dtype="bfloat16", fused_gelu=True, lora_fp32=False,
                         train=dict(batch_size=16, grad_accum=1, optimizer="adamw_torch_fused",
                                    gradient_checkpointing=False, group_by_length=True)),
    "nf4-fast-2x8": dict(quantization="nf4", dtype="bfloat16", fused_gelu=True, lora_fp32=False,
                         train=dict(batch_size=2, grad_accum=8, optimizer="adamw_torch_fused",
                                    gradient_checkpointing=False, group_by_length=True)),
    "nf4-fast-4x4": dict(quantization="nf4", dtype="bfloat16", fused_gelu=True, lora_fp32=False,
                         train=dict(batch_size=4, grad_accum=4, optimizer="adamw_torch_fused",
                                    gradient_checkpointing=False, group_by_length=True)),
    "nf4-grouped-16": dict(quantization="nf4", dtype="bfloat16", train=dict(batch_size=16, grad_accum=1,
                           optimizer="adamw_torch_fused", gradient_checkpointing=True, group_by_length=True)),
    "nf4-grouped": dict(quantization="nf4", dtype="bfloat16", train=dict(batch_size=8, grad_accum=2,
                        optimizer="adamw_torch_fused", gradient_checkpointing=True, group_by_length=True)),
}


class StepTimer(TrainerCallback):
    """Times optimizer steps after `warmup` of them, counting the real tokens their batches held."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.tokens, self.samples, self.steps = warmup, None, 0, 0, 0

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.start is not None:
            self.steps += 1
        torch.cuda.synchronize()
        self.end = time.perf_counter()


class CountingCollator(CompletionCollator):
    def __init__(self, pad_token_id: int, timer: StepTimer):
        super().__init__(pad_token_id)
        self.timer, self.log = timer, []

    def __call__(self, examples):
        batch = super().__call__(examples)
        self.log.append((int(batch["attention_mask"].sum()), len(examples), batch["input_ids"].numel()))
        return batch


# The preprocess stage's own code on the phi2-random profile (the default template, max_seq_len 1126),
# training examples drawn from both sample files: the sample's validation and (all but 10) test articles.
EXAMPLES = ("data.train_size=null", "data.validation_split=test", "data.validation_size=990", "data.test_size=10")


def examples(tokenizer, count: int) -> list[dict]:
    processed, _ = prepare_splits(profile_config("phi2-random", EXAMPLES), tokenizer)
    return cycle_seeded(processed["train"] + processed["validation"], count)


def run(name: str, steps: int, warmup: int, tokenizer, data, profile_to: str | None = None) -> dict:
    spec = VARIANTS[name]
    reference = profile_config("phi2-random")
    train = dataclasses.replace(reference.train, epochs=1, lr=2.0e-4, warmup_steps=0, logging_steps=1000,
                                group_by_length=False, **spec["train"])
    config = dataclasses.replace(reference, train=train,
                                 lora=dataclasses.replace(reference.lora, fp32_weights=spec.get("lora_fp32", True)))
    torch.cuda.reset_peak_memory_stats()
    model = apply_lora(phi2_random(dtype=spec["dtype"], quantization=spec["quantization"], lora=False,
                                   fused_gelu=spec.get("fused_gelu", False)),
                       config.lora, 0, train.gradient_checkpointing)
    timer = StepTimer(warmup)
    collator = CountingCollator(tokenizer.pad_token_id, timer)
    per_step = train.batch_size * train.grad_accum
    with tempfile.TemporaryDirectory() as scratch:
        args = training_arguments(dataclasses.replace(config, model=dataclasses.replace(
            config.model, dtype=spec["dtype"])), scratch)
        args.max_steps, args.eval_strategy, args.save_strategy = steps + warmup, "no", "no"
        trainer = Trainer(model=model, args=args, train_dataset=to_dataset(data[: per_step * (steps + warmup + 1)]),
                          data_collator=collator, callbacks=[timer])
        trainer.train()
        if profile_to:  # forward + backward of two batches the size of the timed ones, profiled
            batch = {k: v.cuda() for k, v in CompletionCollator(tokenizer.pad_token_id)(
                data[: train.batch_size]).items()}

            def forward_backward(model=model):
                for _ in range(2):
                    model(**batch).loss.backward()
            profile_table(forward_backward, profile_to)
    seconds = timer.end - timer.start
    timed = collator.log[warmup * train.grad_accum:(warmup + steps) * train.grad_accum]
    real, samples, padded = (sum(x[i] for x in timed) for i in range(3))
    mean_len = real / samples
    flops_per_token = 4 * PARAMS + 4 * LAYERS * HIDDEN * mean_len  # matmuls (fwd + bwd to inputs) + attention
    result = {
        "bench": "train", "variant": name, "quantization": spec["quantization"], "dtype": spec["dtype"],
        "fused_gelu": spec.get("fused_gelu", False), "lora_fp32_weights": spec.get("lora_fp32", True),
        **{k: v for k, v in spec["train"].items()}, "lora_r": config.lora.r,
        "lora_targets": list(config.lora.target_modules), "timed_steps": steps,
        "real_tokens_per_s": round(real / seconds), "samples_per_s": round(samples / seconds, 2),
        "padding_share": round(1 - real / padded, 3),
        "mfu": round(real / seconds * flops_per_token / PEAK_FLOPS, 4),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
        **run_facts(),
    }
    del trainer, model
    torch.cuda.empty_cache()
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default="reference,bf16,bf16-grouped")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out-dir", default="bench/results")
    parser.add_argument("--profile", default="", help="variant to profile after timing it")
    args = parser.parse_args()
    tokenizer = load_tokenizer(TOKENIZER)
    data = examples(tokenizer, 2000)
    table = []
    for name in args.variants.split(","):
        try:
            result = run(name, args.steps, args.warmup, tokenizer, data,
                         f"{args.out_dir}/train_{name}_profile.txt" if name == args.profile else None)
        except torch.OutOfMemoryError as error:
            result = {"bench": "train", "variant": name, "error": f"out of memory: {str(error)[:200]}", **run_facts()}
            torch.cuda.empty_cache()
        write_result(f"{args.out_dir}/train_{name}.json", result)
        table.append(result)
    print(f"\n{'variant':<18} {'tokens/s':>9} {'samples/s':>9} {'MFU':>6} {'pad':>6} {'peak GiB':>8}")
    for r in table:
        if "error" in r:
            print(f"{r['variant']:<18} {r['error'][:60]}")
        else:
            print(f"{r['variant']:<18} {r['real_tokens_per_s']:>9} {r['samples_per_s']:>9} {r['mfu']:>6} "
                  f"{r['padding_share']:>6} {r['peak_gib']:>8}")


if __name__ == "__main__":
    main()
