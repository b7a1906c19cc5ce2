"""Data in: the hub download, local splits and their cleaning, prompts and tokenization, preprocess."""
