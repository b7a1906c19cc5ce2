"""LoRA fine-tuning with transformers' Trainer, logged with dvclive; saves the adapter only."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import TrainerCallback

from xsumtune.config import Config
from xsumtune.tokenization import IGNORE_INDEX


class CompletionCollator:
    """Right-pads a batch: input_ids with the pad id, labels with IGNORE_INDEX, by length alone."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(example["input_ids"]) for example in examples)
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
        gradient_checkpointing=train.gradient_checkpointing,
        logging_steps=train.logging_steps,
        eval_strategy="epoch",
        save_strategy="no",
        train_sampling_strategy="group_by_length" if train.group_by_length else "random",
        seed=config.seed,
        data_seed=config.seed,
        bf16=cuda and model.dtype == "bfloat16",
        fp16=cuda and model.dtype == "float16",
        use_cpu=not cuda,
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def train_adapter(config: Config, model, tokenizer, train_rows: list[dict], validation_rows: list[dict],
                  adapter_dir: str, live_dir: str) -> dict:
    """Trains the LoRA adapter, saves it to adapter_dir and returns the final metrics."""
    import tempfile

    from dvclive import Live
    from transformers import Trainer

    with tempfile.TemporaryDirectory() as scratch, \
            Live(live_dir, dvcyaml=None, save_dvc_exp=False, report=None) as live:
        trainer = Trainer(
            model=model,
            args=training_arguments(config, scratch),
            train_dataset=to_dataset(train_rows),
            eval_dataset=to_dataset(validation_rows),
            data_collator=CompletionCollator(tokenizer.pad_token_id),
            callbacks=[LiveLogger(live)],
        )
        result = trainer.train()
        # eval_strategy "epoch" already scored the final weights; the last eval_loss is theirs.
        eval_loss = [log["eval_loss"] for log in trainer.state.log_history if "eval_loss" in log][-1]
        metrics = {
            "train_loss": result.training_loss,
            "eval_loss": eval_loss,
            "eval_perplexity": math.exp(min(eval_loss, 50.0)),
            "train_steps": result.global_step,
            "train_examples": len(train_rows),
            "train_tokens": sum(len(row["input_ids"]) for row in train_rows) * config.train.epochs,
            "train_runtime_s": result.metrics["train_runtime"],
        }
        for key, value in metrics.items():
            live.summary[key] = value
        save_adapter(model, tokenizer, adapter_dir)
    return metrics


def save_adapter(model, tokenizer, adapter_dir: str) -> None:
    """The adapter (not the base model) and tokenizer, written beside the target, then renamed into place."""
    import shutil

    target = Path(adapter_dir)
    scratch = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    model.save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)


class LiveLogger(TrainerCallback):
    """Logs Trainer's numbers to dvclive at the optimizer step: train/loss, eval/loss, train/learning_rate."""

    def __init__(self, live):
        self.live = live

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self.live.step = state.global_step
        for key, value in logs.items():
            if key in ("epoch", "total_flos") or not isinstance(value, (int, float)) or key.endswith(("_runtime", "per_second")):
                continue
            name = f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}"
            if name.startswith("train/train_"):
                continue  # the end-of-training summary Trainer logs once; metrics.json has it
            self.live.log_metric(name, value)
