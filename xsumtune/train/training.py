"""LoRA fine-tuning with transformers' Trainer, logged with dvclive; saves the adapter only."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from xsumtune.checkpoints import claim, fingerprint, latest_complete_checkpoint, release
from xsumtune.config import CUDA_GRAPH_MODES, Config, ConfigError
from xsumtune.data.tokenization import IGNORE_INDEX
from xsumtune.io import atomic_dir
from xsumtune.train.packing import EpochPacks, PackedCollator, packed_inputs, use_packed_attention


class CompletionCollator:
    """Right-pads a batch: input_ids with the pad id, labels with IGNORE_INDEX, by length alone; with
    pad_to_multiple_of (train.pad_to_multiple_of), up to the next multiple of it."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id, self.multiple = pad_token_id, pad_to_multiple_of or 1

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        width = -(-max(len(example["input_ids"]) for example in examples) // self.multiple) * self.multiple
        input_ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, example in enumerate(examples):
            length = len(example["input_ids"])
            input_ids[row, :length] = torch.tensor(example["input_ids"])
            labels[row, :length] = torch.tensor(example["labels"])
            attention_mask[row, :length] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def to_dataset(rows: list[dict]) -> list[dict]:
    """Trainer takes any sized, indexable dataset; a list keeps only what the collator reads."""
    return [{"input_ids": row["input_ids"], "labels": row["labels"]} for row in rows]


def training_arguments(config: Config, output_dir: str):
    from transformers import TrainingArguments

    train, model = config.train, config.model
    cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=train.epochs,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        learning_rate=train.lr,
        lr_scheduler_type=train.scheduler,
        warmup_steps=train.warmup_steps,
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        optim=train.optimizer,
        # gradient checkpointing is apply_lora's to switch on (peft's k-bit preparation needs it there): one place
        logging_steps=train.logging_steps,
        eval_strategy="epoch",
        save_strategy="steps",
        save_steps=train.save_steps,
        save_total_limit=2,  # a kill while saving the newest still leaves a complete one
        train_sampling_strategy="group_by_length" if train.group_by_length else "random",
        neftune_noise_alpha=train.neftune_alpha,
        seed=config.seed,
        data_seed=config.seed,
        bf16=cuda and model.dtype == "bfloat16",
        fp16=cuda and model.dtype == "float16",
        use_cpu=not cuda,
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        # every trainable (LoRA) weight gets a gradient each step: no search for unused ones, and no DDP warning
        ddp_find_unused_parameters=False,
        # a step bar (main process only) on a terminal; elsewhere (a log, dvc queue) one line per logging step
        disable_tqdm=not sys.stderr.isatty(),
        # Trainer's filter reads every step's loss to the host (a wait on the GPU); a NaN loss is logged as one
        logging_nan_inf_filter=False,
        # batches go to the GPU from pinned memory without waiting for the steps queued before them
        accelerator_config={"non_blocking": cuda},
    )


LABELLED = "labelled_positions"  # a batch's labelled_positions, as LabelledCollator adds them


def labelled_positions(labels: torch.Tensor) -> torch.Tensor:
    """The positions whose next token is labelled, as indices into the batch's flattened [rows x tokens] grid."""
    rows, cols = (labels[:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)
    return rows * labels.shape[1] + cols


class LabelledCollator:
    """A collator's batches with their labelled_positions (LABELLED), found on the host as the batch is built: on
    the GPU, nonzero would wait for every kernel queued before it, so the host could not run ahead of the step."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.collator(examples)
        return {**batch, LABELLED: labelled_positions(batch["labels"])}


def labelled_logits_trainer(train=None):
    """transformers' Trainer with LabelledLogitsLoss (imported here: only training needs transformers' Trainer).
    train: the train params, for train.padding_mask and train.label_smoothing (else mask on, no smoothing)."""
    from transformers import Trainer

    class LabelledLogitsTrainer(LabelledLogitsLoss, Trainer):
        pass

    if train is not None:
        LabelledLogitsTrainer.padding_mask, LabelledLogitsTrainer.label_smoothing = train.padding_mask, train.label_smoothing
        LabelledLogitsTrainer.cuda_graphs = train.compile and train.compile_mode in CUDA_GRAPH_MODES
    return LabelledLogitsTrainer


class LabelledLogitsLoss:
    """A Trainer mixin: logits only where a label is, not at every position of every row.

    In a summarization batch about one position in ten is labelled (the summary and its eos; the prompt
    and the padding are not), yet a causal LM computes the vocabulary's logits everywhere, in float32 for
    the loss: for SmolLM2's 49,152 words that is a fifth of the step's arithmetic and most of its memory.
    A hook on the output layer gathers the hidden states of the labelled positions first. The loss is
    the same cross-entropy, summed and divided as Trainer's own (by the batch's labelled tokens across
    gradient accumulation, num_items_in_batch, or their mean when it is not given).

    padding_mask false (train.padding_mask): the batch's attention mask is left out. Rows are right-padded
    (CompletionCollator), so under causal attention no real token sees a pad, and every labelled position
    gets the same logits; without a mask PyTorch's SDPA runs its causal kernel (FlashAttention on a GPU)
    instead of a masked one. The pads' own outputs change, and nothing reads them.
    label_smoothing (train.label_smoothing): PyTorch's label-smoothed cross-entropy while training; evaluation
    (eval_loss, perplexity) keeps the plain loss, so runs with and without it compare."""

    padding_mask = True
    label_smoothing = 0.0
    cuda_graphs = False  # layers compiled to CUDA graphs: each forward is a new step of theirs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.cuda_graphs and inputs["input_ids"].is_cuda:
            torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are not read again
        labels = inputs["labels"]
        positions = inputs.get(LABELLED)
        if positions is None:  # a batch from another collator than prepare_steps' (found on its device)
            positions = labelled_positions(labels)
        targets = labels.reshape(-1)[positions + 1]  # position t predicts token t + 1
        head = self.accelerator.unwrap_model(model).get_output_embeddings()
        hook = head.register_forward_pre_hook(
            lambda _, args: (args[0].reshape(-1, args[0].shape[-1]).index_select(0, positions).unsqueeze(0), *args[1:]))
        try:
            outputs = model(input_ids=inputs["input_ids"],
                            attention_mask=inputs.get("attention_mask") if self.padding_mask else None,
                            **packed_inputs(inputs))
        finally:
            hook.remove()
        smoothing = self.label_smoothing if model.training else 0.0
        loss = torch.nn.functional.cross_entropy(outputs.logits[0].float(), targets, reduction="sum",
                                                 label_smoothing=smoothing)
        if num_items_in_batch is None:
            loss = loss / max(targets.numel(), 1)
        else:
            loss = loss / num_items_in_batch
            if self.args.average_tokens_across_devices:  # Trainer's own scaling: gradients are averaged over ranks
                loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss


def train_adapter(config: Config, model, tokenizer, train_rows: list[dict], validation_rows: list[dict],
                  adapter_dir: str, live_dir: str, checkpoint_dir: str, resume_key: str = "",
                  callbacks: tuple = (), wrap_collator=None) -> dict:
    """Trains the LoRA adapter, resuming from the last complete checkpoint in checkpoint_dir when it was
    made by the same run (resume_key), then writes the adapter and the dvclive metrics and plots.
    callbacks (Trainer callbacks) and wrap_collator (called with the stage's collator, returns the one to use)
    let a benchmark time this code."""
    args = training_arguments(config, checkpoint_dir)
    train_set, eval_set = training_sets(config, train_rows, config.train.epochs), training_sets(config, validation_rows)
    collator = prepare_steps(config, model, tokenizer.pad_token_id, train_set, eval_set, wrap_collator=wrap_collator)
    with args.main_process_first(desc="checkpoints"):  # one process decides; the others find its marker
        claim(checkpoint_dir, fingerprint(config.seed, config.model, config.lora, config.train, resume_key))
    trainer = labelled_logits_trainer(config.train)(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collator,
        callbacks=[*epoch_callbacks(train_set), *callbacks],
    )
    resume_from = latest_complete_checkpoint(checkpoint_dir)
    if resume_from:
        print(f"train: resuming from {resume_from}")
    result = trainer.train(resume_from_checkpoint=resume_from)
    history = trainer.state.log_history  # restored from the checkpoint on resume: the whole run
    losses = [log["loss"] for log in history if "loss" in log]
    eval_loss = [log["eval_loss"] for log in history if "eval_loss" in log][-1]  # eval_strategy "epoch": final weights
    metrics = {
        # the logged windows' mean; an epoch shorter than logging_steps logs none: Trainer's own run mean then
        "train_loss": sum(losses) / len(losses) if losses else result.training_loss,
        "eval_loss": eval_loss,
        "eval_perplexity": math.exp(min(eval_loss, 50.0)),
        "train_steps": result.global_step,
        "train_examples": len(train_rows),
        "train_tokens": sum(len(row["input_ids"]) for row in train_rows) * config.train.epochs,
    }
    if trainer.is_world_process_zero():  # every process holds the same weights; one writes
        write_live(live_dir, history, metrics)
        save_adapter(model, tokenizer, adapter_dir)
        release(checkpoint_dir)
    return metrics


def training_sets(config: Config, rows: list[dict], epochs: float = 1) -> list[dict] | EpochPacks:
    """The examples Trainer draws batches from: the rows, or with train.pack_tokens their packs, made anew for
    each of epochs (EpochPacks: with more than one, Trainer needs epoch_callbacks)."""
    if config.train.pack_tokens:
        return EpochPacks(rows, config.train.pack_tokens, config.seed, epochs)
    return to_dataset(rows)


def epoch_callbacks(train_set) -> list:
    """The Trainer callback that tells an EpochPacks training set each epoch as it begins (on resume, the epoch
    the checkpoint is in); none for other sets. accelerate's data loader tells the dataset itself in one process,
    but with several it tells their shared sampler instead."""
    if not isinstance(train_set, EpochPacks):
        return []
    from transformers import TrainerCallback

    class EpochCallback(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            train_set.set_epoch(int(state.epoch + 1e-6))  # state.epoch: the epochs done, fractional on resume

    return [EpochCallback()]


def prepare_steps(config: Config, model, pad_token_id: int, *sets, wrap_collator=None):
    """What a training step runs on, as the train params set it: each decoder layer compiled (train.compile,
    train.compile_mode), packed attention (train.pack_tokens), and the collator: a PackedCollator sized by every
    pack it will see (sets: training_sets' training and evaluation sets, every epoch's packs of each), else a
    CompletionCollator padding to train.pad_to_multiple_of; either inside a LabelledCollator, then passed through
    wrap_collator where given (a benchmark's count)."""
    if config.train.compile:
        compile_layers(model, config.train.compile_mode)
    if config.train.pack_tokens:
        use_packed_attention(model)
        packs = [pack for examples in sets
                 for pack in (examples.every_pack() if isinstance(examples, EpochPacks) else examples)]
        collator = PackedCollator(pad_token_id, config.train.pack_tokens, packs)
    else:
        collator = CompletionCollator(pad_token_id, config.train.pad_to_multiple_of)
    collator = LabelledCollator(collator)
    return wrap_collator(collator) if wrap_collator else collator


def compile_layers(model, mode: str = "default") -> int:
    """torch.compile each decoder layer in place (Module.compile: parameter names and saved adapters stay as
    they are). The layers share their code, so dynamo compiles one graph for all of them (and one more once
    the sequence length varies: then dynamic in it). Decoder layers are the classes the model names in
    _no_split_modules, as accelerate's device maps do. mode: torch.compile's (train.compile_mode; with
    reduce-overhead each layer's forward and backward replay as CUDA graphs on a GPU, one recorded per
    distinct shape). Returns how many were compiled."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [module for module in base.modules() if type(module).__name__ in names]
    if not layers:
        raise ConfigError(f"train.compile: {type(base).__name__} names no decoder layer class (_no_split_modules); "
                          "set train.compile: false")
    for layer in layers:
        layer.compile(mode=None if mode == "default" else mode)
    return len(layers)


def adapter_checksum(model) -> str:
    """sha256 of the trainable (adapter) weights, to check that every process ends with the same ones."""
    import hashlib

    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def write_live(live_dir: str, history: list[dict], metrics: dict) -> None:
    """dvclive metrics and plots from Trainer's log history, written beside live_dir and renamed into place.

    Built from the history rather than logged live, so a resumed run's curves are the whole run's."""
    from dvclive import Live

    with atomic_dir(live_dir) as scratch, Live(str(scratch), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        for log in history:
            values = {_metric_name(k): v for k, v in log.items() if _metric_name(k) and isinstance(v, (int, float))}
            if values:
                live.step = log["step"]
                for name, value in values.items():
                    live.log_metric(name, value)
        for key, value in metrics.items():
            live.summary[key] = value


def _metric_name(key: str) -> str | None:
    """Trainer's log key as a dvclive metric (train/loss, eval/loss, ...); None for bookkeeping keys."""
    if key in ("epoch", "step", "total_flos") or key.endswith(("_runtime", "per_second")) or key.startswith("train_"):
        return None
    return f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}"


def save_adapter(model, tokenizer, adapter_dir: str) -> None:
    """The adapter (not the base model) and tokenizer, written beside the target, then renamed into place."""
    with atomic_dir(adapter_dir) as scratch:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        _sort_target_modules(scratch / "adapter_config.json")


def _sort_target_modules(config_path: Path) -> None:
    """peft stores target_modules from a set, in an order that changes with Python's hash seed; sorted,
    the same training gives the same adapter directory byte for byte."""
    import json

    config = json.loads(config_path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
