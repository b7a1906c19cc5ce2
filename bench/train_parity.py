"""Per-example loss of the fast training recipe against the plain one, on Phi-2's architecture (random weights).

Plain: float32 adapter weights, Phi's five-kernel gelu_new. Fast: bf16 adapter weights, one fused gelu.
Same base weights, same non-zero adapter, same batch of real XSum examples; also each example alone.

    python bench/train_parity.py --out bench/results/train_parity.json
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

from common import TOKENIZER, per_example_loss, phi2_random, profile_config, run_facts, write_result
from train_throughput import examples
from xsumtune.model.loading import apply_lora
from xsumtune.data.tokenization import load_tokenizer
from xsumtune.train.training import CompletionCollator


def build(fused_gelu: bool, fp32_weights: bool):
    model = apply_lora(phi2_random(lora=False, fused_gelu=fused_gelu), 
                       dataclasses.replace(profile_config().lora, fp32_weights=fp32_weights), 0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_((torch.randn(param.shape, generator=generator) * 0.02).to(param))
    return model.eval()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--out", default="bench/results/train_parity.json")
    args = parser.parse_args()
    tokenizer = load_tokenizer(TOKENIZER)
    rows = examples(tokenizer, args.examples)
    collate = CompletionCollator(tokenizer.pad_token_id)
    batch = {k: v.cuda() for k, v in collate(rows).items()}
    plain = per_example_loss(build(False, True), batch)
    fast_model = build(True, False)
    fast = per_example_loss(fast_model, batch)
    alone = torch.cat([per_example_loss(fast_model, {k: v.cuda() for k, v in collate([r]).items()}) for r in rows])
    result = {
        "bench": "train_parity", "examples": len(rows),
        "plain_loss": [round(x, 5) for x in plain.tolist()], "fast_loss": [round(x, 5) for x in fast.tolist()],
        "max_abs_diff_fast_vs_plain": round((plain - fast).abs().max().item(), 5),
        "max_abs_diff_batched_vs_alone": round((fast - alone).abs().max().item(), 5),
        "bf16_step_at_loss": 2.0 ** (int(torch.log2(plain.abs().max()).floor().item()) - 7),
        **run_facts(),
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
