"""Shared by the benchmarks: real XSum prompt lengths, Phi-2's architecture with random weights, run facts."""
from __future__ import annotations

import dataclasses
import json
import platform
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xsumtune.config import Config, load_config  # noqa: E402
from xsumtune.data.sources import Report, load_split  # noqa: E402
from xsumtune.data.tokenization import IGNORE_INDEX  # noqa: E402
from xsumtune.model.loading import apply_lora, load_base_model  # noqa: E402

TOKENIZER = str(ROOT / "models" / "tokenizers" / "phi-2")
PHI2 = str(ROOT / "models" / "configs" / "phi-2")


def profile_config(profile: str = "phi2-random", overrides: tuple[str, ...] = ()) -> Config:
    """A profile's params, composed from conf/ as `dvc exp run -S profile=...` does, typed: what a stage reads."""
    from dvc.utils.hydra import compose_and_dump

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "params.yaml"
        compose_and_dump(path, str(ROOT / "conf"), None, "config", str(ROOT / "conf"),
                         [f"profile={profile}", *overrides])
        return load_config(path)


def xsum_test_rows() -> list[dict]:
    return load_split(str(ROOT / "data" / "sample"), "test", "error", Report())


def stage_prompts(profile: str, overrides: tuple[str, ...] = (), tokenizer_dir: str | None = None):
    """(params, tokenizer, prompts): a profile's params (model.tokenizer replaced by tokenizer_dir, a path in the
    repository, if given), its tokenizer, and the generate stage's prompts for the sample's test articles."""
    from xsumtune.data.tokenization import load_tokenizer
    from xsumtune.generate.systems import build_prompts

    config = profile_config(profile, tuple(overrides))
    if tokenizer_dir:
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, tokenizer=str(ROOT / tokenizer_dir)))
    tokenizer = load_tokenizer(config.model.tokenizer, config.model.revision)
    return config, tokenizer, build_prompts(config, tokenizer, xsum_test_rows())


def cycle_seeded(rows: list, count: int, seed: int = 0) -> list:
    """count items drawn by cycling a seeded shuffle of rows: the sample's length distribution, repeated."""
    order = rows[:]
    random.Random(seed).shuffle(order)
    return [order[i % len(order)] for i in range(count)]


def phi2_random(dtype: str = "bfloat16", quantization: str = "none", seed: int = 0, lora: bool = True,
                fused_gelu: bool = False):
    """Phi-2's exact architecture, random weights, with the reference LoRA (B drawn non-zero so it counts)."""
    profile = profile_config()
    config = dataclasses.replace(profile.model, name=PHI2, weights="random", tokenizer=TOKENIZER, dtype=dtype,
                                 quantization=quantization, fused_gelu=fused_gelu)
    model = load_base_model(config, seed)
    if not lora:
        return model
    model = apply_lora(model, profile.lora, seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    return model


@torch.no_grad()
def per_example_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over each row's labelled tokens (float32): what a batch's loss is made of."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                                               reduction="none")
    return losses.sum(1) / (labels != IGNORE_INDEX).sum(1)


class CountingCollator:
    """Wraps the stage's collator, logging (real tokens, articles, tokens with padding) of each training batch
    (not evaluation's: a training batch holds the training rows' own token lists, packed or not)."""

    def __init__(self, collator, train_rows: list[dict]):
        self.collator, self.train_ids, self.batches = collator, {id(row["input_ids"]) for row in train_rows}, []

    def __call__(self, examples):
        batch = self.collator(examples)
        rows = [ids for example in examples
                for ids in (example["input_ids"] if isinstance(example["input_ids"][0], list) else [example["input_ids"]])]
        if id(rows[0]) in self.train_ids:
            self.batches.append((sum(map(len, rows)), len(rows), batch["input_ids"].numel()))
        return batch


def run_facts() -> dict:
    import transformers
    import peft

    return {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
        "python": platform.python_version(),
    }


def commit_facts(given: str | None = None) -> dict:
    """The commit whose code ran: as given (a copy of the tree without its git history), else git's HEAD;
    dirty: tracked files differed from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    if given:
        return {"commit": given}
    return {"commit": git("rev-parse", "HEAD") or "unknown",
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def gpu_time(events) -> tuple[float, int]:
    """(seconds of GPU kernel time, kernel launches) in a profiler's key_averages(): the events on the device,
    whose self time is the GPU's busy time."""
    kernels = [event for event in events if event.device_type.name == "CUDA"]
    return sum(event.self_device_time_total for event in kernels) / 1e6, sum(event.count for event in kernels)


def idle_gaps(events, ranges: tuple[str, ...], top: int = 12) -> str:
    """Where the GPU sat idle in a profiler's events(): the union of kernel intervals against the span from the
    first kernel to the last, the idle time summed by the innermost of the named CPU ranges (record_function)
    holding each gap's middle ("outside" where none does), and the longest gaps with the kernels around them."""
    kernels = sorted((e.time_range.start, e.time_range.end, e.name) for e in events if e.device_type.name == "CUDA")
    spans = sorted((e.time_range.start, e.time_range.end, e.name) for e in events
                   if e.device_type.name == "CPU" and e.name in ranges)
    if not kernels:
        return "no kernels recorded\n"
    gaps, busy, reach, before = [], 0.0, kernels[0][0], kernels[0][2]
    for start, end, name in kernels:
        if start > reach:
            gaps.append((start - reach, reach, before, name))
        if end > reach:
            busy += end - max(start, reach)
            reach, before = end, name
    where: dict[str, list[float]] = {}
    for length, start, _, _ in gaps:
        middle = start + length / 2
        holder = max(((s, name) for s, e, name in spans if s <= middle <= e), default=(0, "outside"))[1]
        where.setdefault(holder, []).append(length)
    span = reach - kernels[0][0]
    lines = [f"GPU busy {busy / 1e6:.3f} s of {span / 1e6:.3f} s from the first kernel to the last "
             f"({busy / span:.1%}); idle {(span - busy) / 1e6:.3f} s in {len(gaps)} gaps"]
    for holder, lengths in sorted(where.items(), key=lambda item: -sum(item[1])):
        lines.append(f"  idle within {holder}: {sum(lengths) / 1e6:.3f} s in {len(lengths)} gaps "
                     f"(longest {max(lengths) / 1e3:.2f} ms)")
    lines.append(f"  the {top} longest gaps (ms after the first kernel, ms idle, kernel before -> after):")
    for length, start, after, name in sorted(gaps, reverse=True)[:top]:
        lines.append(f"    {(start - kernels[0][0]) / 1e3:10.1f} {length / 1e3:8.2f}  {after[:50]} -> {name[:50]}")
    return "\n".join(lines) + "\n"


def write_result(path: str | Path, result: dict, echo: bool = True) -> None:
    """result as JSON at path (its folder made); echo: printed too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    if echo:
        print(json.dumps(result))


def profile_table(run, path: str | Path, rows: int = 30) -> None:
    """Runs run() under torch.profiler and writes the top operators by GPU time (where the time goes)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        run()
        torch.cuda.synchronize()
    table = profiler.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=60)
    Path(path).write_text(table + "\n")
    print(table)
