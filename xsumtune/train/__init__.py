"""Training: the collator, Trainer arguments, the LoRA fine-tuning loop and the adapter it saves."""
