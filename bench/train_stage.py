"""Training throughput of the train stage itself, on a profile's params: what `dvc repro` runs.

Each repetition does what stages/train.py does (the profile's tokenizer, base model, LoRA and
`train_adapter`, with the preprocess stage's own rows) for `--epochs` whole epochs (default 1: every
epoch's steps are alike) and times every optimizer step after `--warmup` of them: so every length the
data holds, in the sampler's order. Each repetition also gives each epoch's real tokens/s apart and the median
step's seconds: with `train.compile_mode: reduce-overhead` the first epoch records a CUDA graph per batch shape
and later ones replay them (`--epochs 3 --reps 1` shows both). `--profile-steps` then runs once more to write the top operators of
3 steps and the share of their wall time the GPU was busy; that run is not one of the timed repetitions
(with the profiler attached, the whole run slowed to about half speed on an H200). A step's time is
the time from the end of the step before it to its own end, on the GPU's stream (CUDA events: the clock does
not wait for the GPU, as the stage doesn't): data loading, collation, logging and host overhead included
wherever the GPU waits for them; the steps during which the stage evaluated or saved a checkpoint are left out. Tokens
are real (non-pad) tokens, counted as the stage's collator builds each training batch. Three
repetitions (`--reps`); the JSON holds each and their median and spread, with the profile, overrides
and commit.

    python bench/train_stage.py --profile smol --name smol
    python bench/train_stage.py --profile phi2-random --name phi2-bf16 --set model.quantization=none \
        --set model.dtype=bfloat16 ... (the settings under test, as `dvc exp run -S` takes them)

The profile's model.name must exist: for `models/base`, run the base_model stage first
(`python -m stages.base_model --params <composed params> --out-dir models/base`).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from common import ROOT, CountingCollator, commit_facts, gpu_time, profile_config, run_facts, write_result
from xsumtune.data.preprocessing import prepare_splits
from xsumtune.data.tokenization import load_tokenizer
from xsumtune.model.loading import apply_lora, load_base_model
from xsumtune.model.runtime import check_runtime
from xsumtune.train.training import train_adapter

PEAK_BF16_FLOPS = 989e12  # H100/H200 SXM dense bf16


class StepClock(TrainerCallback):
    """The end time of every optimizer step and the first step of every epoch; steps during which the stage
    evaluated or saved are marked, and so are the steps profiled (profile_to: tables of the top operators of
    `profile_steps` steps, by GPU time and by host time).

    On a GPU a step's end is a CUDA event recorded on the stream as the step ends, read once the run is over
    (times()): the clock never makes the host wait for the GPU, as the stage itself doesn't, so a step's time is
    the GPU's timeline from the end of the step before, its waits for the host included."""

    def __init__(self, profile_to: str | None = None, profile_from: int = 0, profile_steps: int = 3):
        self.ends, self.skipped, self._busy, self.epoch_starts = [], set(), False, []
        self.profile_to, self.profile_from, self.profile_steps, self._profiler = profile_to, profile_from, profile_steps, None
        self._cuda = torch.cuda.is_available()

    def times(self) -> list[float]:
        """Every step's end, in seconds from the first's."""
        if not self._cuda:
            return [end - self.ends[0] for end in self.ends]
        torch.cuda.synchronize()
        return [self.ends[0].elapsed_time(end) / 1e3 for end in self.ends]

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.epoch_starts.append(len(self.ends))

    def on_step_begin(self, args, state, control, **kwargs):
        if self.profile_to and len(self.ends) == self.profile_from:
            from torch.profiler import ProfilerActivity, profile

            self._profiler = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
            self._profiler.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if self._cuda:
            self.ends.append(torch.cuda.Event(enable_timing=True))
            self.ends[-1].record()
        else:
            self.ends.append(time.perf_counter())
        step = len(self.ends) - 1
        if self._busy or self._profiler is not None:
            self.skipped.add(step)
        self._busy = False
        if self._profiler is not None and step == self.profile_from + self.profile_steps - 1:
            times = self.times()
            self._write_profile(times[step] - times[self.profile_from - 1])

    def _write_profile(self, wall: float) -> None:
        profiler, self._profiler = self._profiler, None
        profiler.__exit__(None, None, None)
        events = profiler.key_averages()
        try:
            gpu, launches = gpu_time(events)
            head = (f"{self.profile_steps} optimizer steps: {wall:.3f} s wall (under the profiler), {gpu:.3f} s of "
                    f"GPU kernel time ({gpu / wall:.0%} busy), {launches} kernel launches\n")
        except (AttributeError, ZeroDivisionError) as error:
            head = f"{self.profile_steps} optimizer steps: {wall:.3f} s wall (under the profiler); no GPU sum: {error}\n"
        table = events.table(sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=60)
        host = events.table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=60)
        Path(self.profile_to).write_text(f"{head}{table}\n\nBy host time:\n{host}\n")
        print(head)

    def on_evaluate(self, args, state, control, **kwargs):
        self._busy = True  # evaluation ran after this step's end: the next interval holds it

    def on_save(self, args, state, control, **kwargs):
        self._busy = True


def repetition(config, tokenizer, train_rows, validation_rows, warmup: int, profile_to: str | None = None) -> dict:
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = load_base_model(config.model, config.seed)
    model = apply_lora(model, config.lora, config.seed, config.train.gradient_checkpointing)
    counting, clock = [], StepClock(profile_to, profile_from=warmup + 1)

    def count(collator):
        counting.append(CountingCollator(collator, train_rows))
        return counting[-1]

    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        metrics = train_adapter(config, model, tokenizer, train_rows, validation_rows, f"{scratch}/adapter",
                                f"{scratch}/live", f"{scratch}/checkpoints", callbacks=[clock], wrap_collator=count)
        total = time.perf_counter() - started
    collator = counting[0]
    per_step = config.train.grad_accum
    ends = clock.times()
    steps = len(ends)
    timed = [i for i in range(warmup + 1, steps) if i not in clock.skipped]
    seconds = sum(ends[i] - ends[i - 1] for i in timed)
    batches = [collator.batches[i * per_step:(i + 1) * per_step] for i in timed]
    real = sum(b[0] for step in batches for b in step)
    rows = sum(b[1] for step in batches for b in step)
    padded = sum(b[2] for step in batches for b in step)
    del model
    # each epoch's timed steps on their own: with CUDA-graph layers the first epoch records, the others replay
    bounds, per_epoch = [*clock.epoch_starts, steps], []
    for first, end in zip(bounds, bounds[1:]):
        steps_in = [(i, batch) for i, batch in zip(timed, batches) if first <= i < end]
        span = sum(ends[i] - ends[i - 1] for i, _ in steps_in)
        per_epoch.append(round(sum(b[0] for _, step in steps_in for b in step) / span) if span else None)
    return {
        "optimizer_steps": steps, "timed_steps": len(timed), "timed_seconds": round(seconds, 2),
        "real_tokens_per_s": round(real / seconds), "samples_per_s": round(rows / seconds, 2),
        "real_tokens_per_s_by_epoch": per_epoch,
        "step_seconds_median": round(statistics.median(ends[i] - ends[i - 1] for i in timed), 4),
        "padding_share": round(1 - real / padded, 3), "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0, 2),
        "stage_seconds": round(total, 1), "train_loss": round(metrics["train_loss"], 4),
        "eval_loss": round(metrics["eval_loss"], 4),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", required=True)
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="key=value, as dvc exp run -S")
    parser.add_argument("--name", required=True)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1, help="train.epochs for the timed run")
    parser.add_argument("--commit", default=None, help="the commit to record (default: git rev-parse HEAD)")
    parser.add_argument("--flops-per-token", type=float, default=None,
                        help="model FLOPs per trained token (forward + backward), for MFU against bf16 peak")
    parser.add_argument("--same-packs", action="store_true", help="packed: every epoch trains on the first "
                        "epoch's packs (as the stage did before packing anew each epoch), for comparison")
    parser.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--profile-steps", action="store_true",
                        help="one more run, not timed, profiles 3 steps after warm-up")
    parser.add_argument("--compile-model", action="store_true", help="with train.compile: the decoder stack compiled "
                        "as one module (the embeddings, every layer and the final norm) instead of layer by layer")
    args = parser.parse_args()
    if args.compile_model:
        from xsumtune.train import training

        def compile_stack(model, mode="default"):
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            base.model.compile(mode=None if mode == "default" else mode)
            return 1

        training.compile_layers = compile_stack
    if args.same_packs:
        from xsumtune.train import packing
        pack_anew = packing.EpochPacks.__init__
        packing.EpochPacks.__init__ = lambda self, rows, pack_tokens, seed, epochs: pack_anew(self, rows, pack_tokens,
                                                                                              seed, 1)

    config = profile_config(args.profile, (*args.overrides, f"train.epochs={args.epochs}"))
    check_runtime(config, processes=1)
    tokenizer = load_tokenizer(config.model.tokenizer, config.model.revision)
    splits, _ = prepare_splits(config, tokenizer)  # the preprocess stage's rows
    reps = []
    for _ in range(args.reps):  # each printed as it ends: a run cut short still tells what it measured
        reps.append(repetition(config, tokenizer, splits["train"], splits["validation"], args.warmup))
        print(f"{args.name} repetition {len(reps)}: {reps[-1]}", flush=True)
    if args.profile_steps:  # a run of its own: under the profiler a whole run slows down, not only its steps
        repetition(config, tokenizer, splits["train"], splits["validation"], args.warmup,
                   f"{args.out_dir}/train_stage_{args.name}_profile.txt")
    speeds = sorted(r["real_tokens_per_s"] for r in reps)
    result = {
        "bench": "train_stage", "name": args.name, "profile": args.profile, "overrides": args.overrides,
        "same_packs": args.same_packs, **({"compile_model": True} if args.compile_model else {}),
        **commit_facts(args.commit), "train_rows": len(splits["train"]),
        "batch": f"{config.train.batch_size} x {config.train.grad_accum}",
        "epochs": args.epochs, "warmup_steps_untimed": args.warmup,
        "real_tokens_per_s_median": statistics.median(speeds),
        "real_tokens_per_s_min": speeds[0], "real_tokens_per_s_max": speeds[-1],
        "spread": round((speeds[-1] - speeds[0]) / statistics.median(speeds), 4),
        "peak_gib_max": max(r["peak_gib"] for r in reps),
        "repetitions": reps, **run_facts(),
    }
    if args.flops_per_token:
        result["mfu_median"] = round(result["real_tokens_per_s_median"] * args.flops_per_token / PEAK_BF16_FLOPS, 4)
    write_result(f"{args.out_dir}/train_stage_{args.name}.json", result)


if __name__ == "__main__":
    main()
