"""Greedy decoding in a loop of its own (`generate.cache: graphs`): a static KV cache, and every decode step
after the first few replayed as one CUDA graph (eager where there is no GPU).

Per token, `generate` prepares inputs, builds the mask, runs logits processors and stopping criteria in
Python, and the model launches a few hundred kernels: host time that a small model's GPU work can't hide.
Here one step is fixed-shape work on tensors that stay in place (the next token, each row's position, a
4D mask that gains one slot a step, the row's done flag and the line-end state), so it is captured once
per batch and replayed. The host looks at the done flags every `check_every` steps only; when at most half
the rows are left, the finished ones are dropped (the cache and the state keep only the rows still running)
and the step is captured again for the smaller batch.

It makes the tokens `generate` makes with greedy decoding, a static cache, `min_new_tokens`, eos as pad
and LineEnd (tests/test_generation.py compares them token for token): the same cache slots and values after
prefill (which runs the rows right-padded, with causal attention and no mask: see prefill), the same positions,
argmax over float32 logits, eos for rows already done. Decode steps of a grouped-query model
read each key/value head once (grouped_decode_attention), where transformers' SDPA path with a mask
copies every key/value head once per query head it serves, for each step.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager, nullcontext
from typing import NamedTuple

import torch
from torch.nn.functional import scaled_dot_product_attention
from torch.profiler import record_function
from transformers import AttentionInterface, DynamicCache, StaticCache
from transformers.cache_utils import DynamicLayer, StaticLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from xsumtune.generate import kernels
from xsumtune.generate.lines import LineTables, line_done

GROUPED = "sdpa_grouped_decode"


class DecodeGroup(NamedTuple):
    """Rows start:stop of a decode batch, whose prompts all begin at or after first_slot of the static cache:
    the slots before it are left padding for every one of them."""
    start: int
    stop: int
    first_slot: int


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """tensor copied to device; to a GPU from pinned memory, so the host does not wait for the GPU to finish what
    is queued (a copy from pageable memory does)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def decode_groups(lengths: list[int], padding: float, min_rows: int = 16) -> list[DecodeGroup]:
    """A left-padded batch's rows (prompt lengths, in order) in runs for decode attention, each reading the
    cache from its longest prompt's first slot on: a run ends before a row whose prompt is shorter than
    (1 - padding) x the run's longest, once it has min_rows rows (a short run would leave the GPU idle).
    The stage's batches are sorted longest first, so their runs are bands of similar length."""
    width, groups, start, longest = max(lengths), [], 0, lengths[0]
    for row in range(1, len(lengths)):
        if lengths[row] < (1 - padding) * longest and row - start >= min_rows:
            groups.append(DecodeGroup(start, row, width - longest))
            start, longest = row, lengths[row]
        longest = max(longest, lengths[row])
    return [*groups, DecodeGroup(start, len(lengths), width - longest)]


def _one_token_attention(query, key, value, attention_mask, scaling):
    # repeat_kv maps query head h to key/value head h // g: h = kv * g + j, so a view groups them
    batch, heads, _, dim = query.shape
    grouped = query.reshape(batch, key.shape[1], heads // key.shape[1], dim)
    output = scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask, scale=scaling)
    return output.reshape(batch, heads, 1, dim).transpose(1, 2)


def grouped_decode_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                             decode_groups: list[DecodeGroup] | None = None,
                             row_slots: tuple[torch.Tensor, torch.Tensor] | None = None, **kwargs):
    """SDPA for one new token per row: the query heads that share a key/value head are that head's queries
    (a group of g rows against the same keys), so no key or value is copied. With decode_groups, each run of
    rows reads only the slots from its first_slot on (what it skips is left padding, masked anyway): one
    SDPA call a run. With row_slots (each row's first slot, the slot written last), kernels.row_attention:
    each row reads its own slots only. Anything else: transformers' SDPA.

    query [batch, heads, 1, dim]; key, value [batch, kv_heads, slots, dim]; attention_mask [batch, 1, 1, slots]."""
    if query.shape[2] != 1 or attention_mask is None or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    if row_slots is not None:
        return kernels.row_attention(query, key, value, *row_slots, module.scaling if scaling is None else scaling), None
    if not decode_groups or len(decode_groups) == 1 and decode_groups[0].first_slot == 0:
        return _one_token_attention(query, key, value, attention_mask, scaling), None
    return torch.cat([_one_token_attention(query[g.start:g.stop], key[g.start:g.stop, :, g.first_slot:],
                                           value[g.start:g.stop, :, g.first_slot:],
                                           attention_mask[g.start:g.stop, :, :, g.first_slot:], scaling)
                      for g in decode_groups]), None


AttentionInterface.register(GROUPED, grouped_decode_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(GROUPED, sdpa_mask)


@contextmanager
def _grouped_attention(model):
    """The model's attention implementation set to grouped_decode_attention while inside, where it is SDPA
    (every module reads it at call time)."""
    config = model.config
    before = config._attn_implementation
    if before == "sdpa":
        config._attn_implementation_internal = GROUPED
    try:
        yield
    finally:
        config._attn_implementation_internal = before


def prefill_groups(lengths: list[int], prefill_tokens: int | None) -> list[list[int]]:
    """Rows of a batch in groups for prefill, longest first: each group's rows x its longest prompt within
    prefill_tokens (a row alone may exceed it); None: one group of every row, in order."""
    if prefill_tokens is None:
        return [list(range(len(lengths)))]
    groups, current = [], []
    for row in sorted(range(len(lengths)), key=lambda r: -lengths[r]):
        if current and (len(current) + 1) * lengths[current[0]] > prefill_tokens:
            groups.append(current)
            current = []
        current.append(row)
    return [*groups, current] if current else groups


class _RolledLayer(DynamicLayer):
    """A prefill call's cache layer over right-padded rows: each key and value goes straight into the static
    cache's layer at its row and slot (a row's tokens end at the batch's width, as left padding puts them), and
    the call's attention gets the call's own keys and values back. One index_put writes every position."""

    def __init__(self, target: StaticLayer, batch: int, rows: torch.Tensor, where: torch.Tensor, width: int):
        """rows [group, 1, 1]: the call's rows in the batch; where [group, 1, cut]: each position's slot (for
        _RowWrittenLayer, [group]: each row's prompt length); width: the left-padded batch's."""
        super().__init__()
        self.target, self.batch, self.rows, self.where, self.width = target, batch, rows, where, width

    def update(self, keys: torch.Tensor, values: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.target.is_initialized:
            self.allocate(keys, values)
        self.write(keys, values)
        return keys, values

    def allocate(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """The target's tensors as one call would make them: every row, the cache's length, zeroed."""
        self.target.lazy_initialization(keys.new_empty((self.batch, keys.shape[1], 0, keys.shape[-1])),
                                        values.new_empty((self.batch, values.shape[1], 0, values.shape[-1])))

    def write(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        heads = torch.arange(keys.shape[1], device=keys.device)[None, :, None]  # the index_put's, made once
        for cache, new in ((self.target.keys, keys), (self.target.values, values)):
            if _words(cache) and _words(new):  # a head's vector as 8-byte words: a quarter of the elements to index
                cache, new = cache.view(torch.int64), new.view(torch.int64)
            cache.index_put_((self.rows, heads, self.where), new)


class _RowWrittenLayer(_RolledLayer):
    """_RolledLayer writing each row's own tokens only (kernels.write_rows), its right padding nowhere: for
    decoding that reads each row's own slots only (kernels.row_attention). Its cache is not zeroed either:
    row_attention reads only slots written before it reads them."""

    def allocate(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        target = self.target
        target.lazy_initialization(keys.new_empty((0, keys.shape[1], 0, keys.shape[-1])),
                                   values.new_empty((0, values.shape[1], 0, values.shape[-1])))
        target.keys, target.values = (x.new_empty((self.batch, *x.shape[1:])) for x in (target.keys, target.values))
        target.batch_size = self.batch

    def write(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        for cache, new in ((self.target.keys, keys), (self.target.values, values)):
            kernels.write_rows(cache, new, self.rows.view(-1), self.where, self.width)


def _words(x: torch.Tensor) -> bool:
    """Whether x [..., dim] can be viewed as 8-byte words along its last dim."""
    size = x.element_size()
    return x.stride(-1) == 1 and x.shape[-1] * size % 8 == 0 and x.storage_offset() * size % 8 == 0 and \
        all(stride * size % 8 == 0 for stride in x.stride()[:-1])


def prefill(model, cache: StaticCache, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor,
            prefill_tokens: int | None = None, lengths: list[int] | None = None, causal: bool = True,
            row_writes: bool = False) -> torch.Tensor:
    """The prompts' forward pass into the batch's static cache; the last position's logits of each row.

    The batch comes left-padded. Its rows are run right-padded instead: with no padding before a row's tokens,
    attention is plain causal attention (flash kernels, which skip the keys after each query), where left padding
    needs a mask over every pair of positions. Each row's keys and values go to the slots left padding gives
    them (_RolledLayer), and the logits are taken at each row's last token: the same slots, positions and values
    as one masked call, but for the attention kernels' rounding.

    With prefill_tokens, rows of similar length are run in groups (prefill_groups), each cut to its own longest
    prompt: less padding run through the model (half of the smol profile's 800,000-token batches of the sample's
    test articles). lengths: the prompts' lengths (attention_mask's row sums) where the caller has read them.
    causal=False, or a cache of other layers than StaticLayer: one masked call over the left-padded batch.
    row_writes: each row's own keys and values written by one Triton kernel (kernels.write_rows), its right
    padding nowhere, where one index_put writes every position: for decoding that reads each row's own slots
    only (kernels.row_attention). Then the cache is not zeroed either: no slot is read before it is written; and
    a fused Phi's last layer runs past its keys and values for each row's last position only
    (kernels.last_positions_only), the one position the head reads."""
    if not causal or not all(type(layer) is StaticLayer for layer in cache.layers):
        return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                     past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
    if lengths is None:
        lengths = attention_mask.sum(-1).tolist()  # read to the host to cut and group
    rows, width = input_ids.shape
    device = input_ids.device
    length = to_device(torch.tensor(lengths), device)
    # position j of a right-padded row is slot (j + its padding) % width of the left-padded one; a right pad
    # lands in the left padding, which is masked, or read by no row
    slots = (torch.arange(width, device=device) + (width - length)[:, None]) % width
    right = input_ids.gather(1, slots)
    head = model.get_output_embeddings()
    logits = None
    groups = prefill_groups(lengths, prefill_tokens)
    order = to_device(torch.tensor([row for group in groups for row in group]), device)
    start = 0
    for group in groups:
        index = order[start:start + len(group)]
        start += len(group)
        cut = max(lengths[row] for row in group)
        last = length[index] - 1
        part = DynamicCache(config=model.config.get_text_config(decoder=True))
        # where the group's tokens go, gathered once for every layer: each row's length where each row writes
        # its own tokens, each position's slot where one index_put writes them all
        kind, where = (_RowWrittenLayer, length[index]) if row_writes else (_RolledLayer, slots[index, None, :cut])
        part.layers = [kind(layer, rows, index[:, None, None], where, width) for layer in cache.layers]
        # the head sees each row's last token only
        taken = torch.arange(len(group), device=device)
        hook = head.register_forward_pre_hook(lambda module, args: (args[0][taken, last, None],))
        try:
            trimmed = kernels.last_positions_only(model, taken, last) if row_writes else nullcontext()
            # a row's positions as left padding gives them, its right padding repeating the last
            own = torch.arange(cut, device=device).minimum(last[:, None])
            with trimmed:
                out = model(input_ids=right[index, :cut], position_ids=own, past_key_values=part, use_cache=True,
                            logits_to_keep=0).logits[:, -1]
        finally:
            hook.remove()
        if logits is None:
            logits = out.new_empty((rows, out.shape[-1]))
        logits[index] = out
        del part, out
    for layer in cache.layers:
        layer.cumulative_length.fill_(width)  # the next token goes to slot width, as after one call
    return logits


class _Decoder:
    """The loop's state, on the model's device; choose() picks a token from logits, step() runs one decode step."""

    def __init__(self, model, cache, input_ids, attention_mask, positions, *, max_new_tokens: int, eos_token_id: int,
                 min_new_tokens: int, line_tables: LineTables | None, groups: list[DecodeGroup] | None = None,
                 row_attention: bool = False):
        rows, width = input_ids.shape
        device = input_ids.device
        self.model, self.cache, self.eos, self.min_new_tokens = model, cache, eos_token_id, min_new_tokens
        self.output = torch.full((rows, max_new_tokens), eos_token_id, dtype=torch.long, device=device)
        self.tokens = self.output.clone()  # of the rows still in the batch (self.rows: their rows of output)
        self.rows = torch.arange(rows, device=device)
        self.index = torch.zeros(1, dtype=torch.long, device=device)  # the new token being chosen
        self.unfinished = torch.ones(rows, dtype=torch.bool, device=device)
        self.next_input = torch.empty((rows, 1), dtype=torch.long, device=device)
        self.positions = positions[:, -1:].clone()  # advanced before each step: generate's last position + 1
        self.slot = torch.full((1,), width - 1, dtype=torch.long, device=device)  # the cache slot written last
        self.mask = torch.zeros((rows, 1, 1, width + max_new_tokens), dtype=torch.bool, device=device)
        self.mask[:, 0, 0, :width] = attention_mask.bool()
        self.line = None if line_tables is None else LineTables(*(to_device(table, device) for table in line_tables))
        self.groups = groups  # decode attention's runs of rows (decode_groups), or None: every row reads every slot
        if row_attention:  # each row's first slot (its prompt's first token), for kernels.row_attention
            self.first = width - attention_mask.sum(-1)
        if line_tables is not None:
            self.has_text = torch.zeros(rows, dtype=torch.bool, device=device)

    def choose(self, logits: torch.Tensor) -> None:
        scores = logits.float()
        if self.min_new_tokens:  # MinNewTokensLengthLogitsProcessor: no eos before min_new_tokens
            scores[:, self.eos] = torch.where(self.index < self.min_new_tokens, float("-inf"), scores[:, self.eos])
        chosen = torch.where(self.unfinished, scores.argmax(-1), self.eos)  # rows done get eos, as generate's pad
        self.tokens.index_copy_(1, self.index, chosen[:, None])
        done = chosen == self.eos
        if self.line is not None:  # LineEnd's rule, on the same tables
            done |= line_done(self.line, self.has_text, chosen)
        self.unfinished &= ~done
        self.next_input.copy_(chosen[:, None])
        self.index += 1

    ROW_STATE = ("tokens", "rows", "unfinished", "next_input", "positions", "mask", "has_text", "first")

    def keep(self, rows: torch.Tensor) -> None:
        """From here on only these rows (indices into the batch as it is): their state and their cache slots
        are copied into smaller tensors, and the tokens of every row so far are written to the output."""
        self.output[self.rows] = self.tokens
        for name in self.ROW_STATE:
            if hasattr(self, name):
                setattr(self, name, getattr(self, name).index_select(0, rows))
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys.index_select(0, rows), layer.values.index_select(0, rows)
            layer.batch_size = len(rows)

    def new_tokens(self) -> torch.Tensor:
        self.output[self.rows] = self.tokens
        return self.output

    def step(self) -> None:
        self.positions += 1
        self.slot += 1
        self.mask.index_fill_(3, self.slot, True)
        if hasattr(self, "first"):  # to the attention function
            extra = {"row_slots": (self.first, self.slot)}
        else:
            extra = {} if self.groups is None else {"decode_groups": self.groups}
        logits = self.model(input_ids=self.next_input, attention_mask=self.mask, position_ids=self.positions,
                            past_key_values=self.cache, use_cache=True, **extra).logits[:, -1]
        self.choose(logits)


@functools.cache
def _capture_stream(device: int) -> torch.cuda.Stream:
    """The stream decode steps are captured on, one per device."""
    return torch.cuda.Stream(device)


def _capture(graph: torch.cuda.CUDAGraph, step) -> None:
    """step() recorded into graph, not run (no state moves), on a capture stream of the current device's own.
    Unlike torch.cuda.graph, nothing waits for the GPU first and the allocator keeps its cache: the capture is
    recorded while the GPU still runs the prefill and the eager steps queued before it (warm-up enough for the
    kernels and handles the step uses), where waiting left the GPU idle for the capture's whole host time."""
    with torch.cuda.stream(_capture_stream(torch.cuda.current_device())):
        graph.capture_begin()
        try:
            step()
        finally:
            graph.capture_end()


def _drop_finished(decoder: _Decoder, lengths: list[int], decode_padding: float | None) -> list[int]:
    """The batch goes on with its unfinished rows only; their prompt lengths (and decode attention's runs of
    rows, with decode_padding) follow."""
    with record_function("drop finished rows"):
        kept = decoder.unfinished.nonzero().squeeze(1)
        decoder.keep(kept)
        if decode_padding is None:
            return lengths
        lengths = [lengths[row] for row in kept.tolist()]
        decoder.groups = decode_groups(lengths, decode_padding)
        return lengths


def _eager_step(decoder: _Decoder, cuda: bool) -> None:
    """One decode step run as it is, on CUDA on a side stream (the warm-up CUDA graph capture wants)."""
    if not cuda:
        decoder.step()
        return
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        decoder.step()
    torch.cuda.current_stream().wait_stream(side)


@torch.inference_mode()
def greedy_decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
                  eos_token_id: int, min_new_tokens: int = 0, line_tables: LineTables | None = None,
                  check_every: int = 8, warmup: int = 2, drop_below: float = 0.5, min_rows: int = 32,
                  prefill_tokens: int | None = None, decode_padding: float | None = None,
                  triton_kernels: bool = False, lengths: list[int] | None = None,
                  while_running=None) -> torch.Tensor:
    """New tokens [rows, steps run] for a left-padded batch: eos after a row's end (eos or, with line_tables,
    its line's end), and steps run >= the longest row's tokens (the host checks every check_every steps).

    At a check, if at most drop_below of the batch's rows are still running (and the batch has min_rows or
    more), the batch goes on with those rows only. On a CUDA device, `warmup` eager decode steps (on a side
    stream, as CUDA graph capture wants; one after each drop), then one captured step replayed for the rest;
    elsewhere every step runs eagerly. prefill_tokens: see prefill. decode_padding: decode attention in runs of
    rows of similar prompt length (decode_groups), each reading the cache from its own longest prompt on;
    None: every row reads every slot. triton_kernels: where Triton runs (xsumtune/generate/kernels.py), decode
    attention reads each row's own slots only, and a Llama's RMSNorm, rotary embedding and SiLU gate and Phi's
    partial rotary embedding run fused (decode_padding then has no use). lengths: the prompts' lengths
    (attention_mask's row sums) where the caller knows them, so the host need not wait for the GPU to read
    them: then nothing here waits for the GPU before the first decode steps are queued, and the last steps may
    still be queued when this returns (reading the tokens back waits for them). while_running: called once,
    when the prefill and the first decode steps are queued and before the host first waits for the GPU."""
    fused = triton_kernels and kernels.available(input_ids.device)
    if fused:  # row attention reads each row's own slots: no runs of rows to plan
        decode_padding = None
    with kernels.fused_layers(model) if fused else nullcontext():
        rows, width = input_ids.shape
        cache = StaticCache(config=model.config.get_text_config(decoder=True), max_cache_len=width + max_new_tokens)
        for layer in cache.layers:  # made on the device: each layer's copy there, made lazily, waits for the GPU
            if isinstance(getattr(layer, "cumulative_length", None), torch.Tensor):
                layer.cumulative_length = torch.zeros_like(layer.cumulative_length, device=input_ids.device)
        positions = attention_mask.long().cumsum(-1) - 1  # as generate's _prepare_position_ids_for_generation
        positions = positions.masked_fill(attention_mask == 0, 0)
        with record_function("prefill"):
            if lengths is None:  # read to the host once, for prefill and decode attention's runs
                lengths = attention_mask.sum(-1).tolist()
            logits = prefill(model, cache, input_ids, attention_mask, positions, prefill_tokens, lengths,
                             row_writes=fused)
            decoder = _Decoder(model, cache, input_ids, attention_mask, positions, max_new_tokens=max_new_tokens,
                               eos_token_id=eos_token_id, min_new_tokens=min_new_tokens, line_tables=line_tables,
                               groups=None if decode_padding is None else decode_groups(lengths, decode_padding),
                               row_attention=fused)
            decoder.choose(logits)
        del logits
        cuda = input_ids.device.type == "cuda"
        graph, steps, eager_until = None, 1, warmup
        with _grouped_attention(model), record_function("decode"):
            while steps < max_new_tokens:
                if steps % check_every == 0:
                    if while_running is not None:
                        while_running()
                        while_running = None
                    running, left = len(decoder.rows), int(decoder.unfinished.sum())
                    if left == 0:
                        break
                    if left <= drop_below * running and running >= min_rows:
                        lengths = _drop_finished(decoder, lengths, decode_padding)
                        if graph is not None:
                            graph.reset()
                            graph, eager_until = None, steps
                if not cuda or steps <= eager_until:
                    _eager_step(decoder, cuda)
                else:
                    if graph is None:
                        graph = torch.cuda.CUDAGraph()
                        with record_function("capture"):
                            _capture(graph, decoder.step)
                    graph.replay()
                steps += 1
        if while_running is not None:  # fewer steps than check_every
            while_running()
        if graph is not None:
            graph.reset()
        return decoder.new_tokens()[:, :steps]
