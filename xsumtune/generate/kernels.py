"""Triton kernels for the graphs loop on a GPU (`generate.triton_kernels`).

- row_attention: a decode step's attention, each row reading only its own slots of the static cache (from its
  prompt's first token to the slot just written). A batch's rows are left-padded to its longest prompt, so
  SDPA over every slot reads the padding of shorter prompts too (47% of the smol profile's slots).
- fused_layers: Llama's RMSNorm, rotary embedding and SiLU gate each as one kernel, where PyTorch runs five to
  eight elementwise kernels, most in float32 (over half the smol profile's prefill time); Phi's partial rotary
  embedding as one kernel for q and k, where PyTorch slices, rotates and concatenates in a dozen (a sixth of
  the phi2 profile's prefill time); both rotate q and k in place, a Phi only its rotated dims. Each rounds
  where PyTorch's ops round (bf16 after each product and sum of the rotary embedding, the normalised row before
  the weight, SiLU before the gate): the same values, but for a sum's order and the last bit of an exp or
  rsqrt, so at most a bf16 tie apart.
- a Phi decoder layer of plain Linear modules (a merged adapter) as fewer, fuller passes over memory: q, k and v
  one matmul (their weights one tensor, the modules' own weights views into it); the tanh GELU in fc1's matmul
  (cuBLASLt's epilogue); the residual sum in place, the attention's dense and fc2 each adding into the layer's
  input (the matmul's beta = 1), where PyTorch writes both outputs and adds them in two more kernels; their
  biases added to the input in the LayerNorm kernel as it reads it. The sum rounds to bf16 after each matmul
  rather than after each term, so again a rounding apart.

Triton needs a GPU; with TRITON_INTERPRET=1 set before import, the same kernels run on CPU tensors (the tests).
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch
from torch import nn
from transformers.models.llama import modeling_llama
from transformers.models.phi import modeling_phi

try:
    import triton
    import triton.language as tl
except ImportError:  # no Triton for this platform: PyTorch's kernels
    triton = None

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
LLAMA_ROTARY = modeling_llama.apply_rotary_pos_emb  # transformers' own, for what the fused kernel doesn't take
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")  # the tanh approximation cuBLASLt's GELU epilogue computes
ROWS = 16  # query rows a row_attention program holds: a key/value head's query heads, padded for tl.dot


def available(device: torch.device) -> bool:
    """Whether the kernels can run on tensors of this device."""
    return triton is not None and (device.type == "cuda" or INTERPRET)


if triton is not None:
    @triton.jit
    def _row_attention_kernel(Q, K, V, Out, First, Last, scale, sqb, sqh, skb, skh, sks, svb, svh, svs, sob, soh,
                              GROUP: tl.constexpr, ROWS: tl.constexpr, DIM: tl.constexpr, DIM_P: tl.constexpr,
                              BLOCK: tl.constexpr, UPCAST: tl.constexpr, HEADS_FIRST: tl.constexpr):
        if HEADS_FIRST:  # the grid (kv_heads, batch): a row's heads launch together, the longest rows first
            row = tl.program_id(1)
            kv = tl.program_id(0)
        else:
            row = tl.program_id(0)
            kv = tl.program_id(1)
        first = tl.load(First + row)
        last = tl.load(Last)
        g = tl.arange(0, ROWS)
        d = tl.arange(0, DIM_P)
        q_mask = (g < GROUP)[:, None] & (d < DIM)[None, :]
        q = tl.load(Q + row * sqb + (kv * GROUP + g)[:, None] * sqh + d[None, :], mask=q_mask, other=0.0)
        if UPCAST:  # the interpreter's tl.dot takes bf16 bits for integers
            q = q.to(tl.float32)
        top = tl.full([ROWS], float("-inf"), tl.float32)
        total = tl.zeros([ROWS], tl.float32)
        acc = tl.zeros([ROWS, DIM_P], tl.float32)
        for start in range(first, last + 1, BLOCK):
            s = start + tl.arange(0, BLOCK)
            valid = s <= last
            kv_mask = valid[:, None] & (d < DIM)[None, :]
            k = tl.load(K + row * skb + kv * skh + s[:, None] * sks + d[None, :], mask=kv_mask, other=0.0)
            if UPCAST:
                k = k.to(tl.float32)
            scores = tl.where(valid[None, :], tl.dot(q, tl.trans(k)) * scale, float("-inf"))
            new_top = tl.maximum(top, tl.max(scores, 1))
            p = tl.exp(scores - new_top[:, None])
            alpha = tl.exp(top - new_top)
            v = tl.load(V + row * svb + kv * svh + s[:, None] * svs + d[None, :], mask=kv_mask, other=0.0)
            if UPCAST:
                v = v.to(tl.float32)
            acc = acc * alpha[:, None] + tl.dot(p.to(V.dtype.element_ty).to(v.dtype), v)
            total = total * alpha + tl.sum(p, 1)
            top = new_top
        out = acc / total[:, None]
        tl.store(Out + row * sob + (kv * GROUP + g)[:, None] * soh + d[None, :], out.to(Out.dtype.element_ty),
                 mask=q_mask)

    @triton.jit
    def _write_rows_kernel(New, Cache, Rows, Lengths, width, snb, snh, sns, scb, sch, scs, DIM: tl.constexpr,
                           DIM_P: tl.constexpr, BLOCK: tl.constexpr):
        g = tl.program_id(0)
        h = tl.program_id(2)
        length = tl.load(Lengths + g)
        t = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        d = tl.arange(0, DIM_P)
        mask = (t < length)[:, None] & (d < DIM)[None, :]
        x = tl.load(New + g * snb + h * snh + t[:, None] * sns + d[None, :], mask=mask)
        row = tl.load(Rows + g)
        tl.store(Cache + row * scb + h * sch + (t + width - length)[:, None] * scs + d[None, :], x, mask=mask)

    @triton.jit
    def _rms_norm_kernel(X, W, Y, sx, sy, n, eps, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        c = tl.arange(0, BLOCK)
        mask = c < n
        x = tl.load(X + row * sx + c, mask=mask, other=0.0).to(tl.float32)
        normed = (x * tl.rsqrt(tl.sum(x * x, 0) / n + eps)).to(Y.dtype.element_ty)  # hidden.to(input_dtype)
        w = tl.load(W + c, mask=mask, other=0.0)
        tl.store(Y + row * sy + c, (w.to(tl.float32) * normed.to(tl.float32)).to(Y.dtype.element_ty), mask=mask)

    @triton.jit
    def _layer_norm_kernel(X, W, B, Bias, Y, sx, sy, n, eps, BLOCK: tl.constexpr):
        # Y = LayerNorm(X) and X += Bias (in float32, one rounding), X read once
        row = tl.program_id(0)
        c = tl.arange(0, BLOCK)
        mask = c < n
        x = tl.load(X + row * sx + c, mask=mask, other=0.0).to(tl.float32)
        centred = tl.where(mask, x - tl.sum(x, 0) / n, 0.0)
        rstd = tl.rsqrt(tl.sum(centred * centred, 0) / n + eps)
        w = tl.load(W + c, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(B + c, mask=mask, other=0.0).to(tl.float32)
        tl.store(Y + row * sy + c, (centred * rstd * w + b).to(Y.dtype.element_ty), mask=mask)
        bias = tl.load(Bias + c, mask=mask, other=0.0).to(tl.float32)
        tl.store(X + row * sx + c, (x + bias).to(X.dtype.element_ty), mask=mask)

    @triton.jit
    def _turn(X, cos, sin, b, s, sxb, sxh, sxs, HEADS: tl.constexpr, HEADS_P: tl.constexpr, ROT: tl.constexpr,
              ROT_P: tl.constexpr):
        # the first ROT dims of each head of X's token (b, s) rotated in place; no other dim is read or written
        h = tl.arange(0, HEADS_P)
        d = tl.arange(0, ROT_P)
        other = tl.where(d < ROT // 2, d + ROT // 2, d - ROT // 2)  # rotate_half: cat(-x2, x1)
        sign = tl.where(d < ROT // 2, -1.0, 1.0)
        mask = (h < HEADS)[:, None] & (d < ROT)[None, :]
        base = X + b * sxb + s * sxs + h[:, None] * sxh
        x = tl.load(base + d[None, :], mask=mask, other=0.0).to(tl.float32)
        rotated = tl.load(base + other[None, :], mask=mask, other=0.0).to(tl.float32) * sign[None, :]
        dtype = X.dtype.element_ty
        out = (x * cos[None, :]).to(dtype).to(tl.float32) + (rotated * sin[None, :]).to(dtype).to(tl.float32)
        tl.store(base + d[None, :], out.to(dtype), mask=mask)

    @triton.jit
    def _rotary_kernel(Q, K, Cos, Sin, seq, sqb, sqh, sqs, skb, skh, sks, scb, scs, Q_HEADS: tl.constexpr,
                       Q_HEADS_P: tl.constexpr, K_HEADS: tl.constexpr, K_HEADS_P: tl.constexpr, ROT: tl.constexpr,
                       ROT_P: tl.constexpr):
        b = tl.program_id(0) // seq
        s = tl.program_id(0) % seq
        d = tl.arange(0, ROT_P)
        cos = tl.load(Cos + b * scb + s * scs + d, mask=d < ROT, other=0.0).to(tl.float32)
        sin = tl.load(Sin + b * scb + s * scs + d, mask=d < ROT, other=0.0).to(tl.float32)
        _turn(Q, cos, sin, b, s, sqb, sqh, sqs, Q_HEADS, Q_HEADS_P, ROT, ROT_P)
        _turn(K, cos, sin, b, s, skb, skh, sks, K_HEADS, K_HEADS_P, ROT, ROT_P)

    @triton.jit
    def _silu_gate_kernel(G, U, Out, n, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = i < n
        g = tl.load(G + i, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(U + i, mask=mask, other=0.0).to(tl.float32)
        dtype = Out.dtype.element_ty
        silu = (g / (1.0 + tl.exp(-g))).to(dtype).to(tl.float32)
        tl.store(Out + i, (silu * u).to(dtype), mask=mask)


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


# row_attention's launch: slots a loop step reads, warps and pipeline stages a program, and the grid's order
ROW_ATTENTION = {"BLOCK": 64, "num_warps": 4, "num_stages": 3, "HEADS_FIRST": False}


def row_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, first: torch.Tensor,
                  last: torch.Tensor, scale: float, **launch) -> torch.Tensor:
    """One new token's attention per row over slots first[row]..last of the cache (both on the device, so a
    CUDA graph replays it as the step moves on). query [batch, heads, 1, dim]; key, value [batch, kv_heads,
    slots, dim]; returns [batch, 1, heads, dim], as transformers' attention functions do. launch: ROW_ATTENTION's
    keys, to try others (bench/decode_attention.py)."""
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    if heads // kv_heads > ROWS or query.stride(-1) != 1 or key.stride(-1) != 1 or value.stride(-1) != 1:
        raise ValueError(f"row_attention takes at most {ROWS} query heads a key/value head, unit-stride head dims")
    out = query.new_empty((batch, 1, heads, dim))
    launch = {**ROW_ATTENTION, **launch}
    _row_attention_kernel[(kv_heads, batch) if launch["HEADS_FIRST"] else (batch, kv_heads)](
        query, key, value, out, first, last, scale, query.stride(0), query.stride(1), key.stride(0), key.stride(1),
        key.stride(2), value.stride(0), value.stride(1), value.stride(2), out.stride(0), out.stride(2),
        GROUP=heads // kv_heads, ROWS=ROWS, DIM=dim, DIM_P=max(16, _pow2(dim)), UPCAST=INTERPRET, **launch)
    return out


def write_rows(cache: torch.Tensor, new: torch.Tensor, rows: torch.Tensor, lengths: torch.Tensor,
               width: int) -> None:
    """A right-padded prefill call's keys or values new [group, heads, seq, dim] into the static cache [batch,
    heads, slots, dim] as a batch left-padded to width places them: row g's first lengths[g] positions to cache
    row rows[g], slots width - lengths[g] to width - 1. Its right padding is written nowhere."""
    group, heads, seq, dim = new.shape
    if new.stride(-1) != 1 or cache.stride(-1) != 1:
        raise ValueError("write_rows takes unit-stride head dims")
    block = 64
    _write_rows_kernel[(group, triton.cdiv(seq, block), heads)](
        new, cache, rows, lengths, width, new.stride(0), new.stride(1), new.stride(2), cache.stride(0),
        cache.stride(1), cache.stride(2), DIM=dim, DIM_P=max(16, _pow2(dim)), BLOCK=block)


def rms_norm(module, hidden: torch.Tensor) -> torch.Tensor:
    """LlamaRMSNorm.forward in one kernel (PyTorch's where the weight's dtype isn't the input's)."""
    n = hidden.shape[-1]
    if module.weight.dtype != hidden.dtype or hidden.stride(-1) != 1:
        return type(module).forward(module, hidden)
    rows = hidden.reshape(-1, n)
    out = torch.empty_like(rows)
    _rms_norm_kernel[(rows.shape[0],)](rows, module.weight, out, rows.stride(0), out.stride(0), n,
                                       module.variance_epsilon, BLOCK=_pow2(n))
    return out.view(hidden.shape)


def _rotary_fits(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> bool:
    batch, _, seq, dim = q.shape
    turned = cos.shape[-1]
    return turned % 2 == 0 and turned <= dim == k.shape[-1] and q.stride(-1) == 1 and k.stride(-1) == 1 and \
        q.dtype == k.dtype == cos.dtype == sin.dtype and cos.shape[1:] == (seq, turned) and \
        cos.shape[0] in (1, batch) and cos.stride() == sin.stride() and cos.stride(-1) == 1


def _rotate_in_place(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """q, k with their first cos.shape[-1] dims rotated in place, the rest neither read nor written (a Phi turns
    32 of 80). They stay where the projections put them, [batch, seq, heads, dim] viewed heads first: cuDNN's
    attention writes its output in its query's layout, so the heads' output comes out [batch, seq, heads x dim]
    with no copy to the dense projection. Returns q, k."""
    batch, q_heads, seq, _ = q.shape
    k_heads, turned = k.shape[1], cos.shape[-1]
    _rotary_kernel[(batch * seq,)](
        q, k, cos, sin, seq, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        cos.stride(0) if cos.shape[0] == batch else 0, cos.stride(1), Q_HEADS=q_heads, Q_HEADS_P=_pow2(q_heads),
        K_HEADS=k_heads, K_HEADS_P=_pow2(k_heads), ROT=turned, ROT_P=max(2, _pow2(turned)))
    return q, k


def rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1):
    """Llama's apply_rotary_pos_emb in one kernel for q [batch, heads, seq, dim], k [batch, kv_heads, seq, dim] and
    cos, sin [batch or 1, seq, dim] of their dtype, in place (PyTorch's, new tensors, for anything else)."""
    if unsqueeze_dim != 1 or cos.shape[-1] != q.shape[-1] or not _rotary_fits(q, k, cos, sin):
        return LLAMA_ROTARY(q, k, cos, sin, unsqueeze_dim)
    return _rotate_in_place(q, k, cos, sin)


def _phi_heads(module, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
               attention_mask: torch.Tensor | None, past_key_values=None, qkv=None, last=None,
               **kwargs) -> torch.Tensor:
    """PhiAttention.forward up to its dense projection: the heads' output [batch, seq, heads, dim]. Its partial
    rotary embedding is one kernel for q and k (the first rotary_ndims dims rotated, the rest copied), where
    PyTorch slices, rotates and concatenates in a dozen kernels. qkv: q, k and v's weight and bias as one
    (_join_qkv), for one matmul. last: (rows, positions), each row of right-padded rows and its last position
    [batch]; only that query is attended, and the output is [batch, 1, heads, dim] (every key and value still
    goes to the cache)."""
    cos, sin = position_embeddings
    shape = (*hidden_states.shape[:-1], -1, module.head_dim)
    if qkv is not None:
        sizes = (module.q_proj.out_features, module.k_proj.out_features, module.v_proj.out_features)
        projected = nn.functional.linear(hidden_states, *qkv).split(sizes, -1)
    else:
        projected = (module.q_proj(hidden_states), module.k_proj(hidden_states), module.v_proj(hidden_states))
    query, key, value = (x.view(shape).transpose(1, 2) for x in projected)
    if _rotary_fits(query, key, cos, sin):
        query, key = _rotate_in_place(query, key, cos, sin)
    else:  # PhiAttention's own
        turned = cos.shape[-1]
        q_turned, k_turned = modeling_phi.apply_rotary_pos_emb(query[..., :turned], key[..., :turned], cos, sin)
        query, key = torch.cat((q_turned, query[..., turned:]), -1), torch.cat((k_turned, key[..., turned:]), -1)
    if past_key_values is not None:
        key, value = past_key_values.update(key, value, module.layer_idx)
    if last is not None:  # causal attention of one query a row: the keys up to its position
        rows, positions = last
        mask = torch.arange(key.shape[2], device=positions.device) <= positions[:, None]
        out = nn.functional.scaled_dot_product_attention(query[rows, :, positions, None], key, value,
                                                         attn_mask=mask[:, None, None], scale=module.scaling)
        return out.transpose(1, 2)
    attend = modeling_phi.ALL_ATTENTION_FUNCTIONS.get_interface(module.config._attn_implementation,
                                                                modeling_phi.eager_attention_forward)
    return attend(module, query, key, value, attention_mask, dropout=0.0, scaling=module.scaling, **kwargs)[0]


def _phi_attention(module, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                   attention_mask: torch.Tensor | None, past_key_values=None, **kwargs):
    """PhiAttention.forward with _phi_heads."""
    out = _phi_heads(module, hidden_states, position_embeddings, attention_mask, past_key_values, **kwargs)
    return module.dense(out.reshape(*hidden_states.shape[:-1], -1).contiguous()), None


def layer_norm_adding(norm: nn.LayerNorm, rows: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """norm(rows) in one kernel, which adds bias (float32) to rows in place as it reads them."""
    n = rows.shape[-1]
    out = torch.empty_like(rows)
    _layer_norm_kernel[(rows.shape[0],)](rows, norm.weight, norm.bias, bias, out, rows.stride(0), out.stride(0), n,
                                         norm.eps, BLOCK=_pow2(n), num_warps=8 if n >= 2048 else 4)
    return out


def _fc1_gelu(mlp, rows: torch.Tensor) -> torch.Tensor:
    """PhiMLP's activation_fn(fc1(rows)); on a GPU, a tanh GELU as fc1's matmul epilogue."""
    fc1 = mlp.fc1
    if rows.is_cuda and mlp.config.hidden_act in TANH_GELU:
        return torch._addmm_activation(fc1.bias, rows, fc1.weight.t(), use_gelu=True)
    return mlp.activation_fn(fc1(rows))


def _phi_layer(module, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, position_ids=None,
               past_key_values=None, use_cache: bool = False, position_embeddings=None, **kwargs) -> torch.Tensor:
    """PhiDecoderLayer.forward (in eval: no dropout) with the residual sum in the layer's input, in place:
    x += dense.bias + fc2.bias (as the LayerNorm reads x), x += dense(heads), x += fc2(gelu(fc1(normed))).
    Under last_positions_only, every position's keys and values go to the cache, and the rest of the layer runs
    for each row's last position only (the other positions' outputs are left as they came in)."""
    if module.training or not hidden_states.is_contiguous():
        return type(module).forward(module, hidden_states, attention_mask, position_ids, past_key_values, use_cache,
                                    position_embeddings, **kwargs)
    attention, mlp = module.self_attn, module.mlp
    rows = hidden_states.view(-1, hidden_states.shape[-1])
    normed = layer_norm_adding(module.input_layernorm, rows, getattr(module, BIAS))
    last = getattr(module, LAST, None)
    heads = _phi_heads(attention, normed.view(hidden_states.shape), position_embeddings, attention_mask,
                       past_key_values, qkv=getattr(attention, QKV), last=last, position_ids=position_ids,
                       use_cache=use_cache, **kwargs)
    if last is not None:
        rows, normed = hidden_states[last], normed.view(hidden_states.shape)[last]
    rows.addmm_(heads.reshape(rows.shape[0], -1), attention.dense.weight.t())
    rows.addmm_(_fc1_gelu(mlp, normed), mlp.fc2.weight.t())
    if last is not None:
        hidden_states[last] = rows
    return hidden_states


@contextmanager
def last_positions_only(model, rows: torch.Tensor, last: torch.Tensor):
    """Inside, a prefill call over right-padded rows whose logits are taken at each row's last position (rows
    [rows]: 0, 1, ...; last [rows]: its position) runs its last decoder layer, if fused_layers made it a fused Phi
    layer (_phi_layer), for those positions only past writing the keys and values: nothing after that layer
    reads the other positions."""
    layer, = getattr(model, TRIMMED, (None,))
    if layer is not None:
        setattr(layer, LAST, (rows, last))
    try:
        yield layer is not None
    finally:
        if layer is not None:
            delattr(layer, LAST)


QKV, BIAS, LAST, TRIMMED = "_xsumtune_qkv", "_xsumtune_bias", "_xsumtune_last", "_xsumtune_trimmed"


def _plain_phi_layer(layer) -> bool:
    """Whether _phi_layer can run this PhiDecoderLayer: its projections plain Linear modules with biases, of one
    dtype and device (a base model, or one with its adapter merged), and an affine LayerNorm."""
    attention, mlp, norm = layer.self_attn, layer.mlp, layer.input_layernorm
    linears = (attention.q_proj, attention.k_proj, attention.v_proj, attention.dense, mlp.fc1, mlp.fc2)
    return not attention.qk_layernorm and all(type(m) is nn.Linear and m.bias is not None for m in linears) and \
        type(norm) is nn.LayerNorm and norm.weight is not None and norm.bias is not None and \
        len({(m.weight.dtype, m.weight.device) for m in linears}) == 1


def _join_qkv(attention) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k and v's weights and biases as one weight and one bias, the three modules' own made views into them.
    Kept on the module: while the modules' weights are still those views (merging an adapter adds to them in
    place), later calls copy nothing."""
    linears = (attention.q_proj, attention.k_proj, attention.v_proj)
    joined = getattr(attention, QKV, None)
    if joined is not None and _still_views(joined, linears):
        return joined
    weight = torch.cat([m.weight.detach() for m in linears])
    bias = torch.cat([m.bias.detach() for m in linears])
    for m, w, b in zip(linears, *_split(weight, bias, linears), strict=True):
        m.weight.data, m.bias.data = w, b
    return weight, bias


def _split(weight: torch.Tensor, bias: torch.Tensor, linears) -> tuple[tuple[torch.Tensor, ...], ...]:
    """The joined weight and bias cut back into each module's rows, as views."""
    sizes = [m.out_features for m in linears]
    return weight.split(sizes), bias.split(sizes)


def _still_views(joined: tuple[torch.Tensor, torch.Tensor], linears) -> bool:
    return all(m.weight.data_ptr() == w.data_ptr() and m.weight.shape == w.shape and
               m.bias.data_ptr() == b.data_ptr() and m.bias.shape == b.shape
               for m, w, b in zip(linears, *_split(*joined, linears), strict=True))


def silu_gate(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up in one kernel (gate and up contiguous, of one shape and dtype)."""
    gate, up = gate.contiguous(), up.contiguous()
    out = torch.empty_like(gate)
    _silu_gate_kernel[(triton.cdiv(gate.numel(), 1024),)](gate, up, out, gate.numel(), BLOCK=1024)
    return out


def _mlp(module, x: torch.Tensor) -> torch.Tensor:
    return module.down_proj(silu_gate(module.gate_proj(x), module.up_proj(x)))


@contextmanager
def fused_layers(model):
    """Inside, the Llama layers of model (RMSNorm, rotary embedding, a SiLU MLP) and Phi's layers run the fused
    kernels: a Phi layer of plain Linear modules as _phi_layer, another Phi layer's attention its partial rotary
    embedding; other modules are untouched. A fused Phi layer adds to its input in place: only for a model called
    with input_ids, as the graphs loop calls it. Yields how many modules (and whether Llama's rotary function)
    were switched."""
    norms = [m for m in model.modules() if type(m) is modeling_llama.LlamaRMSNorm]
    mlps = [m for m in model.modules() if type(m) is modeling_llama.LlamaMLP and
            m.config.hidden_act in ("silu", "swish") and not m.config.mlp_bias]
    decoder_layers = [m for m in model.modules() if type(m) is modeling_phi.PhiDecoderLayer]
    phi_layers = [m for m in decoder_layers if _plain_phi_layer(m)]
    phi = [m for m in model.modules() if type(m) is modeling_phi.PhiAttention and not m.qk_layernorm]
    attention = any(type(m) is modeling_llama.LlamaAttention for m in model.modules())
    for modules, forward in ((norms, rms_norm), (mlps, _mlp), (phi, _phi_attention), (phi_layers, _phi_layer)):
        for module in modules:
            module.forward = forward.__get__(module)
    for layer in phi_layers:
        setattr(layer.self_attn, QKV, _join_qkv(layer.self_attn))
        setattr(layer, BIAS, layer.self_attn.dense.bias.float() + layer.mlp.fc2.bias.float())
    # the layer last_positions_only trims: the model's last, if fused (kept in a tuple, not as a submodule)
    trimmed = phi_layers[-1] if phi_layers and phi_layers[-1] is decoder_layers[-1] else None
    setattr(model, TRIMMED, (trimmed,))
    before = modeling_llama.apply_rotary_pos_emb
    if attention:
        modeling_llama.apply_rotary_pos_emb = rotary
    try:
        yield {"norms": len(norms), "mlps": len(mlps), "rotary": attention, "phi_attention": len(phi),
               "phi_layers": len(phi_layers)}
    finally:
        for module in norms + mlps + phi + phi_layers:
            del module.forward
        for layer in phi_layers:
            delattr(layer, BIAS)
        delattr(model, TRIMMED)
        modeling_llama.apply_rotary_pos_emb = before
