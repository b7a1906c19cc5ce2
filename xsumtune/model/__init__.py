"""The model: fetch the base model, load it, apply or attach LoRA, check the runtime before any weights load."""
