"""BERTScore (Zhang et al., 2020) from a local model directory: greedy cosine matching of token embeddings.

Without idf weighting or baseline rescaling; special tokens are left out of the matching, as in the
reference implementation. Figures are comparable only between runs with the same model and layer.
torch is imported only when a scoring model is loaded: scoring without one stays torch-free.
"""
from __future__ import annotations

from pathlib import Path


class BertScorer:
    def __init__(self, model_dir: str, layer: int | None = None, batch_size: int = 16):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if self.tokenizer.pad_token is None:  # GPT-style tokenizers have none; padding is masked anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModel.from_pretrained(model_dir).to(self.device).eval()
        layers = self.model.config.num_hidden_layers
        if layer is not None and layer > layers:
            raise ValueError(f"layer {layer} asked for, but the model has {layers}")
        self.layer = layer if layer is not None else layers  # hidden_states[0] is the embedding layer
        self.batch_size = batch_size
        self.max_length = min(self.tokenizer.model_max_length, 512)

    def _embed(self, texts: list[str]) -> list:
        """Unit-length embeddings (tensors) of each text's tokens, special tokens and padding removed."""
        import torch

        embedded = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                       max_length=self.max_length, return_special_tokens_mask=True,
                                       return_tensors="pt")
                keep = batch.pop("special_tokens_mask").eq(0) & batch["attention_mask"].bool()
                hidden = self.model(**batch.to(self.device), output_hidden_states=True).hidden_states[self.layer]
                hidden = torch.nn.functional.normalize(hidden.float(), dim=-1).cpu()
                embedded += [hidden[row][keep[row]] for row in range(len(hidden))]
        return embedded

    def score(self, predictions: list[str], references: list[str]) -> dict[str, list[float]]:
        """Per example precision, recall and F1, ×100; an empty prediction scores 0."""
        result = {"bertscore_precision": [], "bertscore_recall": [], "bertscore_f1": []}
        for prediction, reference in zip(self._embed(predictions), self._embed(references), strict=True):
            if len(prediction) == 0 or len(reference) == 0:
                precision = recall = f1 = 0.0
            else:
                similarity = prediction @ reference.T
                precision = similarity.max(dim=1).values.mean().item()
                recall = similarity.max(dim=0).values.mean().item()
                f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
            result["bertscore_precision"].append(100 * precision)
            result["bertscore_recall"].append(100 * recall)
            result["bertscore_f1"].append(100 * f1)
        return result


def load_bertscorer(model_dir: str | None, layer: int | None, batch_size: int):
    """(scorer, None), or (None, the reason BERTScore is skipped): it never stops scoring."""
    if model_dir is None:
        return None, "no scoring model: set score.bertscore_model to a local model directory"
    if not Path(model_dir).is_dir():
        return None, f"score.bertscore_model: {model_dir}: no such directory"
    try:
        return BertScorer(model_dir, layer, batch_size), None
    except (OSError, ValueError) as error:
        return None, f"score.bertscore_model: {model_dir}: cannot load: {error}"
