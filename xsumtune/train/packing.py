"""Packed training (train.pack_tokens): articles laid end to end in rows of a fixed number of tokens, each
article attending only to itself, with its own positions from 0.

A packed row holds no padding but its tail, and every step has the same shape, so compiled layers record one
CUDA graph for the whole run (train.compile_mode: reduce-overhead) instead of one per batch width. Attention
runs over the row's segments (cu_seqlens, as FlashAttention's variable-length kernels take them): on a GPU
through PyTorch's varlen_attn (FlashAttention), elsewhere one causal SDPA call per segment. Each article's
logits, and so the loss at every labelled position, are those it gets alone in a batch."""
from __future__ import annotations

import inspect
import itertools
import math
import random

import numpy as np
import torch
from transformers import AttentionInterface

from xsumtune.data.tokenization import IGNORE_INDEX

PACKED = "xsumtune_packed"  # the attention implementation's name, while a model trains on packed rows


def pack_rows(rows: list[dict], pack_tokens: int, seed: int | str) -> list[dict]:
    """The rows in a seeded shuffle, each pack taking them in turn while they fit in pack_tokens. A pack is
    {"input_ids": [a row's ids, ...], "labels": [...]}, the rows' own lists (nothing is copied)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    packs, current, used = [], [], 0
    for index in order:
        length = len(rows[index]["input_ids"])
        if length > pack_tokens:
            raise ValueError(f"train.pack_tokens: a {length}-token row does not fit in {pack_tokens} tokens")
        if current and used + length > pack_tokens:
            packs.append(current)
            current, used = [], 0
        current.append(rows[index])
        used += length
    if current:
        packs.append(current)
    return [{"input_ids": [row["input_ids"] for row in pack], "labels": [row["labels"] for row in pack]}
            for pack in packs]


class EpochPacks(torch.utils.data.Dataset):
    """The training rows packed anew for each epoch, each epoch's packs from its own seeded shuffle (pack_rows), so
    the articles that share a step change from epoch to epoch, as the padded path's sampler reshuffles its batches.
    Trainer sizes its epochs once, so every epoch has the same number of packs: in an epoch that packs into fewer
    than the most, the packs holding the most articles are halved until it has as many. set_epoch picks the epoch
    (train_adapter's EpochCallback); past the last, the epochs repeat.

    seed's epoch 0 packs are pack_rows(rows, pack_tokens, seed)'s, but for the halving."""

    def __init__(self, rows: list[dict], pack_tokens: int, seed: int, epochs: float):
        packed = [pack_rows(rows, pack_tokens, seed if epoch == 0 else f"{seed}:{epoch}")
                  for epoch in range(max(math.ceil(epochs), 1))]  # train.epochs is a float: 2.5 packs 3
        count = max(map(len, packed))
        self.by_epoch = [_halve_to(packs, count) for packs in packed]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch % len(self.by_epoch)

    def __len__(self) -> int:
        return len(self.by_epoch[0])

    def __getitem__(self, index: int) -> dict:
        return self.by_epoch[self.epoch][index]

    def every_pack(self) -> list[dict]:
        """Every epoch's packs: what the collator must be sized for."""
        return [pack for packs in self.by_epoch for pack in packs]


def _halve_to(packs: list[dict], count: int) -> list[dict]:
    """packs, the one holding the most articles split in two (first half, second half) until there are count."""
    packs = list(packs)
    while len(packs) < count:
        index = max(range(len(packs)), key=lambda i: len(packs[i]["input_ids"]))
        pack, half = packs[index], len(packs[index]["input_ids"]) // 2
        packs[index:index + 1] = [{key: values[:half] for key, values in pack.items()},
                                  {key: values[half:] for key, values in pack.items()}]
    return packs


class PackedCollator:
    """A batch of packs as rows of exactly pack_tokens tokens: each pack's articles end to end, then pad tokens
    (no label) in pieces no longer than the longest article, each piece a segment of its own. position_ids
    restart at 0 with each segment; cu_seqlens holds the segments' bounds in the flattened batch, padded with
    empty segments to the same count for every batch (slots a pack). Every batch of a run has one shape.

    packs: every pack the collator will see (training and evaluation), to size the slots and the longest
    segment (FlashAttention's grid is sized by both)."""

    def __init__(self, pad_token_id: int, pack_tokens: int, packs: list[dict]):
        self.pad_token_id, self.tokens = pad_token_id, pack_tokens
        self.longest = max(len(ids) for pack in packs for ids in pack["input_ids"])
        self.slots = max(len(pack["input_ids"]) for pack in packs) + -(-pack_tokens // self.longest)

    def __call__(self, packs: list[dict]) -> dict:
        shape = (len(packs), self.tokens)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        positions = torch.zeros(shape, dtype=torch.long)
        bounds = [0]
        for row, pack in enumerate(packs):  # a row's tensors built in one go each: the host builds every step's batch
            segments = [len(ids) for ids in pack["input_ids"]]
            at = sum(segments)
            for out, lists in ((input_ids, pack["input_ids"]), (labels, pack["labels"])):
                out[row, :at] = torch.from_numpy(np.fromiter(itertools.chain.from_iterable(lists), np.int64, at))
            while at < self.tokens:  # the tail: pads, in segments no longer than an article
                segments.append(min(self.longest, self.tokens - at))
                at += segments[-1]
            lengths = torch.tensor(segments)
            positions[row] = torch.arange(self.tokens) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
            cuts = list(itertools.accumulate(segments))
            cuts += [self.tokens] * (self.slots - len(cuts))
            bounds += [row * self.tokens + cut for cut in cuts]
        return {"input_ids": input_ids, "labels": labels, "position_ids": positions,
                "cu_seqlens": torch.tensor(bounds, dtype=torch.int32), "longest": self.longest}


def packed_inputs(inputs: dict) -> dict:
    """The model's keyword arguments for a PackedCollator batch (no attention mask: the segments are the mask);
    {} for any other batch."""
    if "cu_seqlens" not in inputs:
        return {}
    return {"position_ids": inputs["position_ids"], "cu_seqlens": inputs["cu_seqlens"], "longest": inputs["longest"],
            "use_cache": False}


def use_packed_attention(model) -> None:
    """Sets the model's attention implementation to packed_attention (every attention module reads it at call
    time); the batches must then come from a PackedCollator."""
    model.config._attn_implementation_internal = PACKED


def packed_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                     cu_seqlens=None, longest=None, **kwargs):
    """Causal attention within each segment of packed rows. query [batch, heads, tokens, dim]; key, value
    [batch, kv_heads, tokens, dim]; cu_seqlens the segments' bounds over batch x tokens (PackedCollator).
    Returns [batch, tokens, heads, dim], as transformers' attention functions do."""
    if cu_seqlens is None:
        raise ValueError("packed attention (train.pack_tokens) needs batches from PackedCollator: no cu_seqlens given")
    if dropout:
        raise ValueError("packed attention has no attention dropout; the model's attention_dropout must be 0")
    batch, heads, tokens, dim = query.shape
    q, k, v = (x.transpose(1, 2).reshape(batch * tokens, x.shape[1], dim) for x in (query, key, value))
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and _VARLEN is not None:  # FlashAttention's dtypes
        output = _VARLEN(q, k, v, cu_seqlens, longest, scaling)
    else:
        output = _by_segment(q, k, v, cu_seqlens, scaling)
    return output.view(batch, tokens, heads, dim), None


def _by_segment(q, k, v, cu_seqlens, scaling):
    """One causal SDPA call a segment: the reference, and the path where FlashAttention's kernels are not (a CPU,
    float32, a PyTorch without varlen_attn). It reads the bounds to the host: no CUDA graph can hold it."""
    bounds = cu_seqlens.tolist()
    gqa = k.shape[1] != q.shape[1]
    parts = [torch.nn.functional.scaled_dot_product_attention(
        q[start:stop].transpose(0, 1), k[start:stop].transpose(0, 1), v[start:stop].transpose(0, 1),
        is_causal=True, scale=scaling, enable_gqa=gqa).transpose(0, 1)
        for start, stop in zip(bounds, bounds[1:]) if stop > start]
    return torch.cat(parts)


def _flash_varlen():
    """PyTorch's varlen_attn (FlashAttention over cu_seqlens) with causal masking and grouped key/value heads,
    as this PyTorch's signature names them (is_causal, or window_size (-1, 0) since 2.12); None where it has none."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    causal = {"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}
    has_scale, has_gqa = "scale" in params, "enable_gqa" in params

    def attend(q, k, v, cu_seqlens, longest, scaling):
        extra = dict(causal)
        if has_scale:
            extra["scale"] = scaling
        if k.shape[1] != q.shape[1]:
            if has_gqa:
                extra["enable_gqa"] = True
            else:
                k, v = (x.repeat_interleave(q.shape[1] // x.shape[1], dim=1) for x in (k, v))
        return varlen_attn(q, k, v, cu_seqlens, cu_seqlens, longest, longest, **extra)

    return attend


_VARLEN = _flash_varlen()
AttentionInterface.register(PACKED, packed_attention)
