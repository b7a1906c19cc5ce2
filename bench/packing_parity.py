"""Packed rows (train.pack_tokens) against padded batches: each article's loss, on a profile's model and rows.

The profile's model (eval mode: no dropout) and the preprocess stage's training rows. Each article's mean
cross-entropy over its labelled tokens three ways: in padded batches with the attention mask (the plain path,
`--batch` rows each), in the stage's packs through PyTorch's varlen FlashAttention (the GPU path), and in the
same packs through one SDPA call a segment (the reference path). Recorded: the largest and mean differences,
and each path's seconds.

    python bench/packing_parity.py --profile smol --set model.name=models/configs/smollm2-135m \\
        --set model.weights=random --set model.tokenizer=models/tokenizers/smollm2 --set train.pack_tokens=10240

With `--layout-only`, no model: how all the training rows pack (packs, articles a pack, real-token share).
"""
from __future__ import annotations

import argparse
import time

import torch

from common import ROOT, commit_facts, per_example_loss, profile_config, run_facts, write_result
from xsumtune.data.preprocessing import prepare_splits
from xsumtune.data.tokenization import IGNORE_INDEX, load_tokenizer
from xsumtune.model.loading import load_base_model
from xsumtune.train import packing
from xsumtune.train.training import CompletionCollator


def sync() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


@torch.no_grad()
def packed_losses(model, collator, packs, device) -> dict[int, float]:
    """Each article's mean loss, keyed by the id of its token list, from one forward pass a pack."""
    losses = {}
    for pack in packs:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in collator([pack]).items()}
        logits = model(input_ids=batch["input_ids"], **packing.packed_inputs(batch)).logits[0, :-1].float()
        labels = batch["labels"][0, 1:]  # a segment's first token is a prompt token: no label crosses segments
        nll = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")
        bounds = batch["cu_seqlens"].tolist()
        for index, ids in enumerate(pack["input_ids"]):
            start, stop = bounds[index], bounds[index + 1]
            part = labels[start:stop - 1] != IGNORE_INDEX  # the predictions of the article's tokens after its first
            losses[id(ids)] = float(nll[start:stop - 1][part].sum() / part.sum())
    return losses


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smol")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--layout-only", action="store_true",
                        help="the packs' layout over all training rows (no model): packs, articles a pack, real share")
    parser.add_argument("--commit")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "packing_parity.json"))
    args = parser.parse_args()
    config = profile_config(args.profile, tuple(args.overrides))
    if not config.train.pack_tokens:
        parser.error("set train.pack_tokens (--set train.pack_tokens=N)")
    tokenizer = load_tokenizer(config.model.tokenizer, config.model.revision)
    splits, _ = prepare_splits(config, tokenizer)
    if args.layout_only:
        rows = splits["train"]
        packs = packing.pack_rows(rows, config.train.pack_tokens, config.seed)
        sizes = [len(pack["input_ids"]) for pack in packs]
        write_result(args.out, {
            "bench": "packing_layout", "profile": args.profile, "overrides": args.overrides, **commit_facts(args.commit),
            "rows": len(rows), "real_tokens": sum(len(r["input_ids"]) for r in rows), "pack_tokens": config.train.pack_tokens,
            "packs": len(packs), "articles_per_pack_mean": round(len(rows) / len(packs), 2), "articles_per_pack_max": max(sizes),
            "real_token_share": round(sum(len(r["input_ids"]) for r in rows) / (len(packs) * config.train.pack_tokens), 4)})
        return
    rows = splits["train"][:args.rows]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_base_model(config.model, config.seed).to(device).eval()

    started = sync()
    padded, collator = {}, CompletionCollator(tokenizer.pad_token_id)
    for first in range(0, len(rows), args.batch):
        part = rows[first:first + args.batch]
        batch = {k: v.to(device) for k, v in collator(part).items()}
        padded.update(zip((id(row["input_ids"]) for row in part), per_example_loss(model, batch).tolist()))
    seconds = {"padded": sync() - started}

    packs = packing.pack_rows(rows, config.train.pack_tokens, config.seed)
    packed_collator = packing.PackedCollator(tokenizer.pad_token_id, config.train.pack_tokens, packs)
    packing.use_packed_attention(model)
    paths = {"varlen": packing._VARLEN if device == "cuda" else None, "by_segment": None}
    results = {}
    for name, kernel in paths.items():
        if name == "varlen" and kernel is None:
            continue
        saved, packing._VARLEN = packing._VARLEN, kernel
        try:
            started = sync()
            results[name] = packed_losses(model, packed_collator, packs, device)
            seconds[name] = sync() - started
        finally:
            packing._VARLEN = saved

    def compare(losses: dict[int, float]) -> dict:
        diffs = [abs(losses[key] - padded[key]) for key in padded]
        return {"max_abs_diff": round(max(diffs), 6), "mean_abs_diff": round(sum(diffs) / len(diffs), 6)}

    result = {
        "bench": "packing_parity", "profile": args.profile, "overrides": args.overrides, **commit_facts(args.commit),
        "rows": len(rows), "packs": len(packs), "pack_tokens": config.train.pack_tokens,
        "slots": packed_collator.slots, "longest": packed_collator.longest,
        "real_token_share": round(sum(len(r["input_ids"]) for r in rows) / (len(packs) * config.train.pack_tokens), 4),
        "mean_loss_padded": round(sum(padded.values()) / len(padded), 5),
        **{f"{name}_vs_padded": compare(losses) for name, losses in results.items()},
        "seconds": {k: round(v, 3) for k, v in seconds.items()}, **run_facts(),
    }
    if "varlen" in results:
        diffs = [abs(results["varlen"][key] - results["by_segment"][key]) for key in padded]
        result["varlen_vs_by_segment_max_abs_diff"] = round(max(diffs), 6)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
