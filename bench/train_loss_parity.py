"""The train stage's loss (logits at labelled positions only) against Trainer's own (logits everywhere):
the same loss curve over 200+ optimizer steps, and what each costs, on a profile's own settings.

The train stage's code and a profile's params (`profile_config`): its Trainer arguments, LoRA, model
dtype, batch and accumulation; the profile's own data through the preprocess stage's code. Both runs start
from the same seeded weights and see the same batches in the same order. Recorded: both loss curves, their
largest difference, real (non-pad) tokens/s and seconds per step of each, peak memory.

    python bench/train_loss_parity.py --profile smol --set model.name=models/configs/smollm2-135m \\
        --set model.weights=random --set model.tokenizer=models/tokenizers/smollm2 --steps 200

With `--candidate KEY=VALUE` (repeatable), both runs use the train stage's loss and the second adds those
params: a speed setting (train.compile=true) against the plain path, over the same batches.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from transformers import Trainer, TrainerCallback

from common import ROOT, CountingCollator, commit_facts, profile_config, run_facts, write_result
from xsumtune.data.preprocessing import prepare_splits
from xsumtune.data.tokenization import load_tokenizer
from xsumtune.model.loading import apply_lora, load_base_model
from xsumtune.train.training import (epoch_callbacks, labelled_logits_trainer, prepare_steps, training_arguments,
                                     training_sets)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Clock(TrainerCallback):
    """Seconds and real tokens of each optimizer step after the first few (warm-up: allocator, kernels)."""

    def __init__(self, warmup: int):
        self.warmup, self.times, self.tokens, self.start = warmup, [], 0, None

    def on_step_begin(self, args, state, control, **kwargs):
        sync()
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        sync()
        if state.global_step > self.warmup:
            self.times.append(time.perf_counter() - self.start)


def train_once(config, tokenizer, rows, trainer_class, steps: int, warmup: int) -> dict:
    model = apply_lora(load_base_model(config.model, config.seed), config.lora, config.seed,
                       config.train.gradient_checkpointing)
    examples = training_sets(config, rows, config.train.epochs)
    collator = prepare_steps(config, model, tokenizer.pad_token_id, examples,  # as train_adapter does
                             wrap_collator=lambda collator: CountingCollator(collator, rows))
    clock = Clock(warmup)
    with tempfile.TemporaryDirectory() as scratch:
        args = training_arguments(config, scratch)
        args.max_steps, args.logging_steps, args.save_strategy, args.eval_strategy = steps, 1, "no", "no"
        trainer = trainer_class(model=model, args=args, train_dataset=examples, data_collator=collator,
                                callbacks=[*epoch_callbacks(examples), clock])
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    timed = sum(clock.times)
    real, padded = sum(b[0] for b in collator.batches), sum(b[2] for b in collator.batches)
    per_step_tokens = real / max(trainer.state.global_step, 1)
    return {"losses": losses, "steps": trainer.state.global_step, "timed_steps": len(clock.times),
            "seconds_per_step_median": round(sorted(clock.times)[len(clock.times) // 2], 4),
            "real_tokens_per_s": round(per_step_tokens * len(clock.times) / timed, 1),
            "padding_share": round(1 - real / padded, 4),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smol")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--candidate", action="append", default=[],
                        help="params of the second run, against the first (both the stage's loss)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--commit", help="the commit to record (default: git's HEAD)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_loss_parity.json"))
    args = parser.parse_args()
    config = profile_config(args.profile, tuple(args.overrides))
    tokenizer = load_tokenizer(config.model.tokenizer, config.model.revision)
    splits, _ = prepare_splits(config, tokenizer)
    rows = splits["train"]
    if args.candidate:
        candidate = profile_config(args.profile, tuple(args.overrides + args.candidate))
        plan = (("plain", labelled_logits_trainer(config.train), config),
                ("candidate", labelled_logits_trainer(candidate.train), candidate))
    else:
        plan = (("trainer_own", Trainer, config), ("labelled_logits", labelled_logits_trainer(), config))
    runs = {name: train_once(run_config, tokenizer, rows, trainer_class, args.steps, args.warmup)
            for name, trainer_class, run_config in plan}
    (first, _, _), (second, _, _) = plan
    a, b = runs[first]["losses"], runs[second]["losses"]
    result = {
        "bench": "train_loss_parity", "profile": args.profile, **commit_facts(args.commit), "overrides": args.overrides,
        "candidate_params": args.candidate,
        "train_examples": len(rows), "batch_size": config.train.batch_size, "grad_accum": config.train.grad_accum,
        "steps": args.steps, "max_abs_loss_diff": round(max(abs(x - y) for x, y in zip(a, b)), 5),
        "mean_abs_loss_diff": round(sum(abs(x - y) for x, y in zip(a, b)) / len(a), 5),
        "final_loss": {first: a[-1], second: b[-1]},
        "speedup": round(runs[second]["real_tokens_per_s"] / runs[first]["real_tokens_per_s"], 3),
        **runs, **run_facts(),
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
