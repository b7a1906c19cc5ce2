"""Triton kernels for the graphs loop on a GPU (`generate.triton_kernels`).

- row_attention: a decode step's attention, each row reading only its own slots of the static cache (from its
  prompt's first token to the slot just written). A batch's rows are left-padded to its longest prompt, so
  SDPA over every slot reads the padding of shorter prompts too (47% of the smol profile's slots).
- fused_layers: Llama's RMSNorm, rotary embedding and SiLU gate each as one kernel, where PyTorch runs five to
  eight elementwise kernels, most in float32 (over half the smol profile's prefill time); Phi's partial rotary
  embedding as one kernel for q and k, where PyTorch slices, rotates and concatenates in a dozen (a sixth of
  the phi2 profile's prefill time). Each rounds where PyTorch's ops round (bf16 after each product and sum of
  the rotary embedding, the normalised row before the weight, SiLU before the gate): the same values, but for
  a sum's order and the last bit of an exp or rsqrt, so at most a bf16 tie apart.

Triton needs a GPU; with TRITON_INTERPRET=1 set before import, the same kernels run on CPU tensors (the tests).
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch
from transformers.models.llama import modeling_llama
from transformers.models.phi import modeling_phi

try:
    import triton
    import triton.language as tl
except ImportError:  # no Triton for this platform: PyTorch's kernels
    triton = None

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
LLAMA_ROTARY = modeling_llama.apply_rotary_pos_emb  # transformers' own, for what the fused kernel doesn't take
ROWS = 16  # query rows a row_attention program holds: a key/value head's query heads, padded for tl.dot


def available(device: torch.device) -> bool:
    """Whether the kernels can run on tensors of this device."""
    return triton is not None and (device.type == "cuda" or INTERPRET)


if triton is not None:
    @triton.jit
    def _row_attention_kernel(Q, K, V, Out, First, Last, scale, sqb, sqh, skb, skh, sks, svb, svh, svs, sob, soh,
                              GROUP: tl.constexpr, ROWS: tl.constexpr, DIM: tl.constexpr, DIM_P: tl.constexpr,
                              BLOCK: tl.constexpr, UPCAST: tl.constexpr):
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
    def _rms_norm_kernel(X, W, Y, sx, sy, n, eps, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        c = tl.arange(0, BLOCK)
        mask = c < n
        x = tl.load(X + row * sx + c, mask=mask, other=0.0).to(tl.float32)
        normed = (x * tl.rsqrt(tl.sum(x * x, 0) / n + eps)).to(Y.dtype.element_ty)  # hidden.to(input_dtype)
        w = tl.load(W + c, mask=mask, other=0.0)
        tl.store(Y + row * sy + c, (w.to(tl.float32) * normed.to(tl.float32)).to(Y.dtype.element_ty), mask=mask)

    @triton.jit
    def _rotate(X, Out, cos, sin, b, s, sxb, sxh, sxs, sob, soh, sos, HEADS: tl.constexpr, HEADS_P: tl.constexpr,
                DIM: tl.constexpr, DIM_P: tl.constexpr, ROT: tl.constexpr):
        h = tl.arange(0, HEADS_P)
        d = tl.arange(0, DIM_P)
        turned = d < ROT  # the rotated dims; the rest are copied
        other = tl.where(d < ROT // 2, d + ROT // 2, d - ROT // 2)  # rotate_half: cat(-x2, x1)
        sign = tl.where(d < ROT // 2, -1.0, 1.0)
        mask = (h < HEADS)[:, None] & (d < DIM)[None, :]
        base = X + b * sxb + s * sxs + h[:, None] * sxh
        x = tl.load(base + d[None, :], mask=mask, other=0.0).to(tl.float32)
        rotated = tl.load(base + other[None, :], mask=mask & turned[None, :], other=0.0).to(tl.float32) * sign[None, :]
        dtype = Out.dtype.element_ty
        out = ((x * cos[None, :]).to(dtype).to(tl.float32) + (rotated * sin[None, :]).to(dtype).to(tl.float32))
        out = tl.where(turned[None, :], out, x)
        tl.store(Out + b * sob + s * sos + h[:, None] * soh + d[None, :], out.to(dtype), mask=mask)

    @triton.jit
    def _rotary_kernel(Q, K, Cos, Sin, QO, KO, seq, sqb, sqh, sqs, skb, skh, sks, sqob, sqoh, sqos, skob, skoh, skos,
                       scb, scs, Q_HEADS: tl.constexpr, Q_HEADS_P: tl.constexpr, K_HEADS: tl.constexpr,
                       K_HEADS_P: tl.constexpr, DIM: tl.constexpr, DIM_P: tl.constexpr, ROT: tl.constexpr):
        b = tl.program_id(0) // seq
        s = tl.program_id(0) % seq
        d = tl.arange(0, DIM_P)
        cos = tl.load(Cos + b * scb + s * scs + d, mask=d < ROT, other=0.0).to(tl.float32)
        sin = tl.load(Sin + b * scb + s * scs + d, mask=d < ROT, other=0.0).to(tl.float32)
        _rotate(Q, QO, cos, sin, b, s, sqb, sqh, sqs, sqob, sqoh, sqos, Q_HEADS, Q_HEADS_P, DIM, DIM_P, ROT)
        _rotate(K, KO, cos, sin, b, s, skb, skh, sks, skob, skoh, skos, K_HEADS, K_HEADS_P, DIM, DIM_P, ROT)

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


def row_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, first: torch.Tensor,
                  last: torch.Tensor, scale: float) -> torch.Tensor:
    """One new token's attention per row over slots first[row]..last of the cache (both on the device, so a
    CUDA graph replays it as the step moves on). query [batch, heads, 1, dim]; key, value [batch, kv_heads,
    slots, dim]; returns [batch, 1, heads, dim], as transformers' attention functions do."""
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    if heads // kv_heads > ROWS or query.stride(-1) != 1 or key.stride(-1) != 1 or value.stride(-1) != 1:
        raise ValueError(f"row_attention takes at most {ROWS} query heads a key/value head, unit-stride head dims")
    out = query.new_empty((batch, 1, heads, dim))
    _row_attention_kernel[(batch, kv_heads)](
        query, key, value, out, first, last, scale, query.stride(0), query.stride(1), key.stride(0), key.stride(1),
        key.stride(2), value.stride(0), value.stride(1), value.stride(2), out.stride(0), out.stride(2),
        GROUP=heads // kv_heads, ROWS=ROWS, DIM=dim, DIM_P=max(16, _pow2(dim)), BLOCK=64, UPCAST=INTERPRET)
    return out


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


def _rotated(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """q, k with their first cos.shape[-1] dims rotated and the rest copied, as new [batch, heads, seq, dim] tensors."""
    batch, q_heads, seq, dim = q.shape
    q_out, k_out = q.new_empty(q.shape), k.new_empty(k.shape)
    k_heads = k.shape[1]
    _rotary_kernel[(batch * seq,)](
        q, k, cos, sin, q_out, k_out, seq, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1),
        k.stride(2), q_out.stride(0), q_out.stride(1), q_out.stride(2), k_out.stride(0), k_out.stride(1),
        k_out.stride(2), cos.stride(0) if cos.shape[0] == batch else 0, cos.stride(1), Q_HEADS=q_heads,
        Q_HEADS_P=_pow2(q_heads), K_HEADS=k_heads, K_HEADS_P=_pow2(k_heads), DIM=dim, DIM_P=_pow2(dim),
        ROT=cos.shape[-1])
    return q_out, k_out


def rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1):
    """Llama's apply_rotary_pos_emb in one kernel for q [batch, heads, seq, dim], k [batch, kv_heads, seq, dim] and
    cos, sin [batch or 1, seq, dim] of their dtype (PyTorch's for anything else)."""
    if unsqueeze_dim != 1 or cos.shape[-1] != q.shape[-1] or not _rotary_fits(q, k, cos, sin):
        return LLAMA_ROTARY(q, k, cos, sin, unsqueeze_dim)
    return _rotated(q, k, cos, sin)


def _phi_attention(module, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                   attention_mask: torch.Tensor | None, past_key_values=None, **kwargs):
    """PhiAttention.forward with its partial rotary embedding in one kernel for q and k (the first rotary_ndims
    dims rotated, the rest copied), where PyTorch slices, rotates and concatenates in a dozen kernels."""
    cos, sin = position_embeddings
    shape = (*hidden_states.shape[:-1], -1, module.head_dim)
    query = module.q_proj(hidden_states).view(shape).transpose(1, 2)
    key = module.k_proj(hidden_states).view(shape).transpose(1, 2)
    value = module.v_proj(hidden_states).view(shape).transpose(1, 2)
    if _rotary_fits(query, key, cos, sin):
        query, key = _rotated(query, key, cos, sin)
    else:  # PhiAttention's own
        turned = cos.shape[-1]
        q_turned, k_turned = modeling_phi.apply_rotary_pos_emb(query[..., :turned], key[..., :turned], cos, sin)
        query, key = torch.cat((q_turned, query[..., turned:]), -1), torch.cat((k_turned, key[..., turned:]), -1)
    if past_key_values is not None:
        key, value = past_key_values.update(key, value, module.layer_idx)
    attend = modeling_phi.ALL_ATTENTION_FUNCTIONS.get_interface(module.config._attn_implementation,
                                                                modeling_phi.eager_attention_forward)
    out, weights = attend(module, query, key, value, attention_mask, dropout=0.0, scaling=module.scaling, **kwargs)
    return module.dense(out.reshape(*hidden_states.shape[:-1], -1).contiguous()), weights


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
    """Inside, the Llama layers of model (RMSNorm, rotary embedding, a SiLU MLP) and Phi's attention (its
    partial rotary embedding) run the fused kernels; other modules are untouched. Yields how many modules (and
    whether Llama's rotary function) were switched."""
    norms = [m for m in model.modules() if type(m) is modeling_llama.LlamaRMSNorm]
    mlps = [m for m in model.modules() if type(m) is modeling_llama.LlamaMLP and
            m.config.hidden_act in ("silu", "swish") and not m.config.mlp_bias]
    phi = [m for m in model.modules() if type(m) is modeling_phi.PhiAttention and not m.qk_layernorm]
    attention = any(type(m) is modeling_llama.LlamaAttention for m in model.modules())
    for modules, forward in ((norms, rms_norm), (mlps, _mlp), (phi, _phi_attention)):
        for module in modules:
            module.forward = forward.__get__(module)
    before = modeling_llama.apply_rotary_pos_emb
    if attention:
        modeling_llama.apply_rotary_pos_emb = rotary
    try:
        yield {"norms": len(norms), "mlps": len(mlps), "rotary": attention, "phi_attention": len(phi)}
    finally:
        for module in norms + mlps + phi:
            del module.forward
        modeling_llama.apply_rotary_pos_emb = before
