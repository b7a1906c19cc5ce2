"""Stage 3: summarize every test article with the fine-tuned (and zero-shot) model; write the generations.

Generations only: the score stage scores them, so a scoring change never regenerates a summary."""
import time
from pathlib import Path

import click

from stages import fail_cleanly
from xsumtune.config import load_config
from xsumtune.model.runtime import check_runtime


@click.command()
@click.option("--params", default="params.yaml", show_default=True)
@click.option("--test-data", required=True, help="Processed test split (.parquet).")
@click.option("--adapter-dir", required=True, help="The trained LoRA adapter.")
@click.option("--generations", "generations_dir", required=True, help="Where each system's <system>.jsonl goes.")
@click.option("--progress-dir", required=True, help="Generations so far; a killed run resumes from them.")
@click.option("--run-info", help="Where to record the revisions, library versions and device (JSON).")
@fail_cleanly
def main(params, test_data, adapter_dir, generations_dir, progress_dir, run_info):
    config = load_config(params)
    check_runtime(config, processes=config.generate.processes)
    # the model libraries (seconds of imports) only once the params are known to be good: a bad one ends at once
    from xsumtune import distributed
    from xsumtune.checkpoints import fingerprint, release
    from xsumtune.data.tokenization import load_tokenizer
    from xsumtune.generate.log import GeneratedLog
    from xsumtune.generate.records import write_generations
    from xsumtune.generate.systems import build_prompts, run_system
    from xsumtune.io import read_parquet, write_json
    from xsumtune.model.loading import attach_adapter, dequantize, load_base_model
    from xsumtune.provenance import describe_run

    distributed.init()
    progress = Path(progress_dir) / f"rank-{distributed.rank()}" if distributed.world_size() > 1 else progress_dir
    log = GeneratedLog(progress, fingerprint(config.seed, config.prompt, config.model, config.generate,
                                             Path(test_data), Path(adapter_dir)))
    tokenizer = load_tokenizer(config.model.tokenizer, config.model.revision)
    prompts = build_prompts(config, tokenizer, read_parquet(test_data))
    mine = distributed.shard(prompts)  # every process generates its share; all are gathered in order
    base_model = load_base_model(config.model, config.seed).eval()
    if config.generate.dequantize:  # both systems: the 4-bit weights, dequantized once instead of every call
        base_model = dequantize(base_model, config.model)
    generated, seconds = {}, {}
    if config.generate.zero_shot:  # before the adapter: merging it changes the base weights in place
        with timed(seconds, "zero_shot"):
            generated["zero_shot"] = distributed.gather_in_order(
                prompts, run_system(config, base_model, tokenizer, mine, "zero-shot", log))
    model = attach_adapter(base_model, adapter_dir, merge=config.generate.merge_adapter)
    with timed(seconds, "fine_tuned"):
        fine_tuned = distributed.gather_in_order(prompts, run_system(config, model, tokenizer, mine, "fine-tuned", log))
    if not distributed.is_main():
        return  # the main process writes
    generated = {"fine_tuned": fine_tuned, **generated}
    write_generations(generations_dir, generated)
    speed = {name: {"articles": len(generated[name]), "seconds": round(s, 2),
                    "articles_per_s": round(len(generated[name]) / s, 1) if s > 0 else None}
             for name, s in seconds.items()}
    if run_info:  # a committed output: no timings in it, so the same run writes the same bytes
        write_json(run_info, describe_run(config, model))
    release(progress_dir)
    click.echo("generate: " + "; ".join(
        f"{name} {len(results)} articles, {sum(g.error is not None for g in results)} failed, "
        f"{sum(g.stopped_by_cap for g in results)} cut by the cap" for name, results in generated.items()))
    click.echo("generate speed: " + "; ".join(f"{name} {v['articles']} articles in {v['seconds']} s "
                                              f"({v['articles_per_s']} articles/s)" for name, v in speed.items()))


class timed:
    """Wall seconds of a system's generation (every process's share, gathered), into seconds[name]. A run
    that resumed from saved generations spends no time on those, so its rate reads high."""

    def __init__(self, seconds: dict, name: str):
        self.seconds, self.name = seconds, name

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds[self.name] = time.perf_counter() - self.start


if __name__ == "__main__":
    main()
