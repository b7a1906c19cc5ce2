"""Fine-tune a causal LM with LoRA/QLoRA for one-sentence XSum summaries: the library the stages call."""
