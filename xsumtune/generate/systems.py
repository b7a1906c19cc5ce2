"""The generate stage's logic: prompts for the test articles, and each system's generations, resumable."""
from __future__ import annotations

from xsumtune.config import Config, GenerateConfig
from xsumtune.data.tokenization import PromptEncoder
from xsumtune.generate.generation import GRAPHS_OPTIONS, generate_summaries
from xsumtune.generate.log import GeneratedLog
from xsumtune.generate.records import Generated


def build_prompts(config: Config, tokenizer, rows: list[dict]) -> list[dict]:
    """Generation prompts: the article cut so prompt + max_new_tokens fits max_seq_len."""
    encoder = PromptEncoder(tokenizer, config.prompt.template, config.prompt.chat_template)
    budget = config.prompt.max_seq_len - config.generate.max_new_tokens
    return [{"id": row["id"], "prompt_ids": encoder.encode_prompt(row["document"], budget)[0]} for row in rows]


def decoding_options(config: GenerateConfig) -> dict:
    """`generate` options from the generate params; options for a mode that is off are left out."""
    options = {"num_beams": config.num_beams, "do_sample": config.do_sample}
    if config.min_new_tokens:
        options["min_new_tokens"] = config.min_new_tokens
    if config.no_repeat_ngram_size:
        options["no_repeat_ngram_size"] = config.no_repeat_ngram_size
    if config.num_beams > 1:
        options["length_penalty"] = config.length_penalty
    if config.do_sample:
        options.update(temperature=config.temperature, top_p=config.top_p)
    if config.cache != "dynamic":  # graphs decodes greedily; beams, sampling, blocking or MBR: the static cache
        greedy = config.num_beams == 1 and not config.do_sample and not config.no_repeat_ngram_size and \
            config.mbr_candidates == 1
        options["cache_implementation"] = "static" if config.cache == "graphs" and not greedy else config.cache
        if options["cache_implementation"] == "graphs":
            for key in GRAPHS_OPTIONS:
                if getattr(config, key) is not None:
                    options[key] = getattr(config, key)
    return options


def run_system(config: Config, model, tokenizer, prompts: list[dict], desc: str,
               log: GeneratedLog | None = None) -> list[Generated]:
    """Generations for every prompt, in order; with a log, those already in it are not generated again."""
    done = log.done(desc) if log else {}
    todo = [p for p in prompts if p["id"] not in done]
    fresh = _generate(config, model, tokenizer, todo, desc,
                      on_batch=(lambda batch: log.append(desc, batch)) if log else None) if todo else []
    by_id = {**done, **{g.id: g for g in fresh}}
    return [by_id[p["id"]] for p in prompts]


def _generate(config: Config, model, tokenizer, prompts: list[dict], desc: str, on_batch) -> list[Generated]:
    e = config.generate
    return generate_summaries(model, tokenizer, prompts, batch_size=e.batch_size, max_new_tokens=e.max_new_tokens,
                              seed=e.sample_seed, desc=desc, token_budget=e.token_budget,
                              sort_by_length=e.sort_by_length, on_batch=on_batch, candidates=e.mbr_candidates,
                              cudnn_attention=e.cudnn_attention,
                              **decoding_options(e))
