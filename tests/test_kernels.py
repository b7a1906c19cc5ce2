"""generate.triton_kernels: each Triton kernel (run by Triton's interpreter on CPU tensors; conftest sets
TRITON_INTERPRET) computes what PyTorch's ops compute, and the graphs loop with them keeps every token."""
import copy
from contextlib import nullcontext

import pytest
import torch
from torch.nn.functional import scaled_dot_product_attention, silu
from transformers.models.llama import modeling_llama
from transformers.models.phi import modeling_phi

from xsumtune.generate import kernels
from xsumtune.generate.lines import line_tables
from test_generation import NewlineAt, grouped_model, longest_first_batch, model  # noqa: F401 - fixtures

pytestmark = pytest.mark.skipif(not kernels.available(torch.device("cpu")), reason="needs Triton's interpreter")


@pytest.fixture(scope="module")
def merged(model):  # noqa: F811
    """The tiny Phi with its adapter merged: plain Linear modules, as generate.merge_adapter leaves them."""
    return copy.deepcopy(model).merge_and_unload().eval()

# The interpreter rounds float32 to bf16 by truncation, a GPU to nearest: on CPU a bf16 result may be an ulp off
BF16_ULP = 2 ** -7


def close_in_bf16(actual, expected, scale):
    """Every element within 2 bf16 ulps of scale (the magnitude of what was summed or multiplied)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert bool(((actual.float() - expected.float()).abs() <= 2 * BF16_ULP * scale.float() + 1e-30).all())


@pytest.mark.parametrize("heads,kv_heads,dim", [(9, 3, 64), (4, 4, 80), (4, 2, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("launch", [{}, {"BLOCK": 32, "HEADS_FIRST": True}], ids=["default", "heads-first"])
def test_row_attention_reads_each_rows_own_slots_only(heads, kv_heads, dim, dtype, launch):
    """Each row attends to slots first[row]..last and nothing else: garbage outside them changes nothing, under
    the default launch and another (bench/decode_attention.py tries others)."""
    torch.manual_seed(0)
    rows, slots = 5, 200
    query = torch.randn(rows, heads, 1, dim, dtype=dtype)
    key, value = torch.randn(2, rows, kv_heads, slots, dim, dtype=dtype)
    first, last = torch.tensor([0, 3, 64, 130, 170]), torch.tensor([170])
    mask = torch.zeros(rows, 1, 1, slots, dtype=torch.bool)
    for row in range(rows):
        mask[row, 0, 0, first[row]:last + 1] = True
    group = heads // kv_heads
    expected = scaled_dot_product_attention(query.float(), key.float().repeat_interleave(group, 1),
                                            value.float().repeat_interleave(group, 1), attn_mask=mask,
                                            scale=dim ** -0.5).transpose(1, 2)
    key[~mask[:, 0, 0][:, None, :].expand(-1, kv_heads, -1)] = 1e4  # outside the rows' slots
    actual = kernels.row_attention(query, key, value, first, last, dim ** -0.5, **launch)
    assert actual.shape == (rows, 1, heads, dim) and actual.dtype == dtype
    torch.testing.assert_close(actual.float(), expected, atol=1e-5 if dtype == torch.float32 else 1e-2, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_llama_ops_compute_what_pytorchs_compute(dtype):
    torch.manual_seed(1)
    norm = modeling_llama.LlamaRMSNorm(576, eps=1e-5).to(dtype)
    norm.weight.data.normal_(1, 0.2)
    hidden = torch.randn(2, 37, 576, dtype=dtype) * 3
    expected = norm(hidden)
    actual = kernels.rms_norm(norm, hidden)
    if dtype == torch.float32:
        torch.testing.assert_close(actual, expected)
    else:
        close_in_bf16(actual, expected, expected.abs())

    # q, k as the attention module makes them: [batch, seq, heads, dim] projections, viewed heads first
    q = torch.randn(2, 37, 9, 64, dtype=dtype).transpose(1, 2)
    k = torch.randn(2, 37, 3, 64, dtype=dtype).transpose(1, 2)
    angles = torch.rand(2, 37, 64) * 30
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    expected = modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)
    before = q.clone(), k.clone()
    for actual, expected, x, given in zip(kernels.rotary(q, k, cos, sin), expected, before, (q, k), strict=True):
        assert actual is given  # rotated in place
        if dtype == torch.float32:
            torch.testing.assert_close(actual, expected)
        else:
            close_in_bf16(actual, expected, x.abs() + modeling_llama.rotate_half(x).abs())
    # Phi's partial rotary embedding: the first 32 of 80 dims rotated in place (as modeling_phi rotates them), the
    # rest untouched; q, k and v as views of one joined projection, as a fused Phi layer makes them
    qkv = torch.randn(2, 37, 3 * 6 * 80, dtype=dtype)
    q, k, v = (x.view(2, 37, 6, 80).transpose(1, 2) for x in qkv.split(6 * 80, -1))
    before = qkv.clone()
    cos, sin = cos[..., :32], sin[..., :32]
    given = [before[..., part * 480:(part + 1) * 480].view(2, 37, 6, 80).transpose(1, 2)[..., :32] for part in (0, 1)]
    turned = modeling_phi.apply_rotary_pos_emb(*given, cos, sin)
    assert all(a is b for a, b in zip(kernels._rotate_in_place(q, k, cos, sin), (q, k), strict=True))
    heads, heads_before = qkv.view(2, 37, 18, 80), before.view(2, 37, 18, 80)
    assert torch.equal(heads[..., 32:], heads_before[..., 32:]) and torch.equal(heads[:, :, 12:], heads_before[:, :, 12:])
    for actual, expected, x in zip((q, k), turned, given, strict=True):
        if dtype == torch.float32:
            torch.testing.assert_close(actual[..., :32], expected)
        else:
            close_in_bf16(actual[..., :32], expected, x.abs() + modeling_llama.rotate_half(x).abs())

    gate, up = torch.randn(2, 3, 50, 1536, dtype=dtype) * 3
    expected = silu(gate) * up
    if dtype == torch.float32:
        torch.testing.assert_close(kernels.silu_gate(gate, up), expected)
    else:
        close_in_bf16(kernels.silu_gate(gate, up), expected, (gate * up).abs())


def test_fused_layers_switch_a_llamas_and_a_phis_modules_and_put_them_back(grouped_model, model):  # noqa: F811
    rotary = modeling_llama.apply_rotary_pos_emb
    norms = sum(type(m) is modeling_llama.LlamaRMSNorm for m in grouped_model.modules())
    with kernels.fused_layers(grouped_model) as fused:
        assert fused == {"norms": norms, "mlps": 2, "rotary": True, "phi_attention": 0, "phi_layers": 0} and \
            norms == 5  # 2 x 2 + 1
        assert modeling_llama.apply_rotary_pos_emb is kernels.rotary
        assert all("forward" in vars(m) for m in grouped_model.modules() if type(m) is modeling_llama.LlamaMLP)
    assert modeling_llama.apply_rotary_pos_emb is rotary
    assert not any("forward" in vars(m) for m in grouped_model.modules())
    with kernels.fused_layers(model) as fused:  # a Phi (LoRA on its projections): its attention modules only
        assert fused == {"norms": 0, "mlps": 0, "rotary": False, "phi_attention": 2, "phi_layers": 0}
        assert getattr(model, kernels.TRIMMED) == (None,)  # its layers are not fused: none to trim
        assert all("forward" in vars(m) for m in model.modules() if type(m) is modeling_phi.PhiAttention)
    assert not any("forward" in vars(m) for m in model.modules())
    ids = torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(0))
    for subject in (grouped_model, model):  # float32: the same logits
        with torch.inference_mode():
            expected = subject(input_ids=ids).logits
            with kernels.fused_layers(subject):
                torch.testing.assert_close(subject(input_ids=ids).logits, expected)


def test_a_merged_phi_runs_its_layers_fused_with_its_modules_weights_as_views(merged):
    """A Phi of plain Linear modules runs _phi_layer: q, k and v one matmul whose weight the modules' weights are
    views of (nothing copied on a second entry), the residual sum in the layer's input; the same logits in float32,
    and the modules' weights and forward as before afterwards."""
    layers = [m for m in merged.modules() if type(m) is modeling_phi.PhiDecoderLayer]
    ids = torch.randint(0, 1000, (3, 11), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = merged(input_ids=ids).logits
        before = [[m.weight.clone() for m in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj)]
                  for layer in layers]
        for entry in range(2):
            with kernels.fused_layers(merged) as fused:
                assert fused["phi_layers"] == 2 and all("forward" in vars(layer) for layer in layers)
                assert getattr(merged, kernels.TRIMMED) == (layers[-1],)  # last_positions_only's layer
                weight, bias = getattr(layers[0].self_attn, kernels.QKV)
                if entry == 0:
                    joined = weight.data_ptr()
                assert weight.data_ptr() == joined and weight.shape == (3 * 64, 64) and bias.shape == (3 * 64,)
                assert layers[0].self_attn.k_proj.weight.data_ptr() == weight[64].data_ptr()
                torch.testing.assert_close(merged(input_ids=ids).logits, expected)
    assert not any("forward" in vars(m) for m in merged.modules()) and not hasattr(merged, kernels.TRIMMED)
    for layer, weights in zip(layers, before, strict=True):
        attention = layer.self_attn
        for module, weight in zip((attention.q_proj, attention.k_proj, attention.v_proj), weights, strict=True):
            assert torch.equal(module.weight, weight)
    with torch.inference_mode():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_norm_adding_normalises_and_adds_the_bias_in_place(dtype):
    torch.manual_seed(2)
    norm = torch.nn.LayerNorm(2560, eps=1e-5).to(dtype)
    norm.weight.data.normal_(1, 0.2)
    norm.bias.data.normal_(0, 0.2)
    rows = torch.randn(5, 2560, dtype=dtype) * 3 + 1
    bias = torch.randn(2560) * 0.1
    expected, added = norm(rows), (rows.float() + bias).to(dtype)
    actual = kernels.layer_norm_adding(norm, rows, bias)
    if dtype == torch.float32:
        torch.testing.assert_close(actual, expected)
        torch.testing.assert_close(rows, added)
    else:
        close_in_bf16(actual, expected, expected.abs() + norm.bias.abs())
        close_in_bf16(rows, added, added.abs())


@pytest.mark.parametrize("which", ["lora", "merged", "grouped"])
def test_graphs_loop_with_triton_kernels_keeps_every_token(which, model, merged, grouped_model, tokenizer):  # noqa: F811
    """With the kernels (float32 weights, where they round nowhere), every row's tokens are the plain loop's:
    rows of many prompt lengths end their lines at many steps and leave the batch, the rest go on."""
    from xsumtune.generate.graphs import greedy_decode

    subject = {"lora": model, "merged": merged, "grouped": grouped_model}[which]
    ids, input_ids, attention_mask = longest_first_batch(tokenizer, 12, 22, 5)
    calls = []
    original = kernels.row_attention
    kernels.row_attention = lambda *args: calls.append(args[0].shape[0]) or original(*args)
    hooks = NewlineAt(subject, 13)
    try:
        options = dict(max_new_tokens=24, min_new_tokens=1, eos_token_id=tokenizer.eos_token_id,
                       line_tables=line_tables(tokenizer), min_rows=1)
        plain = greedy_decode(subject, input_ids, attention_mask, **options)
        assert not calls
        fused = greedy_decode(subject, input_ids, attention_mask, triton_kernels=True, **options)
    finally:
        hooks.remove()
        kernels.row_attention = original
    assert fused.tolist() == plain.tolist()
    assert len({row.index(tokenizer.eos_token_id) for row in plain.tolist()}) > 3
    layers = 2
    assert len(calls) >= layers * 8 and calls[0] == len(ids) and min(calls) < len(ids)  # rows left the batch


def test_the_stage_hands_triton_kernels_to_the_graphs_loop(tokenizer):
    from conftest import tiny
    from xsumtune.generate.systems import decoding_options

    assert decoding_options(tiny("generate", cache="graphs", triton_kernels=True))["triton_kernels"] is True
    assert "triton_kernels" not in decoding_options(tiny("generate", cache="graphs", triton_kernels=True, num_beams=2))


def test_prefill_row_writes_put_each_rows_own_tokens_where_left_padding_puts_them(merged, tokenizer):  # noqa: F811
    """kernels.write_rows in prefill: every real slot holds what the index_put path writes there, in a cache of
    every row and slot (left unzeroed: under row_attention no row reads a slot it hasn't written), and the logits
    are the same."""
    from transformers import StaticCache
    from xsumtune.generate.graphs import prefill

    _, input_ids, attention_mask = longest_first_batch(tokenizer, 9, 22, 7)
    positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    config = merged.config.get_text_config(decoder=True)
    caches, logits = [], []
    with torch.inference_mode():
        for row_writes in (False, True):
            cache = StaticCache(config=config, max_cache_len=input_ids.shape[1] + 4)
            logits.append(prefill(merged, cache, input_ids, attention_mask, positions, 120, row_writes=row_writes))
            caches.append(cache)
    torch.testing.assert_close(logits[1], logits[0], rtol=0, atol=0)
    width = input_ids.shape[1]
    real = attention_mask.bool()[:, None, :, None]
    assert not real.all()
    for plain, written in zip(caches[0].layers, caches[1].layers, strict=True):
        for a, b in ((plain.keys, written.keys), (plain.values, written.values)):
            assert b.shape == a.shape
            assert torch.equal(b[:, :, :width].masked_select(real), a[:, :, :width].masked_select(real))


def test_prefill_runs_a_fused_phis_last_layer_for_each_rows_last_position_only(merged, tokenizer):  # noqa: F811
    """Under the fused layers, prefill's last layer attends and runs its MLP for each row's last position only:
    the logits are those of one masked call over the left-padded batch, the cache holds the same keys and values
    in every real slot, and the last layer's other positions never reach the head."""
    from transformers import StaticCache
    from xsumtune.generate.graphs import prefill

    _, input_ids, attention_mask = longest_first_batch(tokenizer, 9, 22, 7)
    positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    config = merged.config.get_text_config(decoder=True)
    last = merged.model.layers[-1]
    seen = []
    hook = last.register_forward_hook(lambda module, args, out: seen.append(vars(module).get(kernels.LAST)))
    caches, logits = [], []
    try:
        with torch.inference_mode():
            for fused in (False, True):
                cache = StaticCache(config=config, max_cache_len=input_ids.shape[1] + 4)
                with kernels.fused_layers(merged) if fused else nullcontext():
                    logits.append(prefill(merged, cache, input_ids, attention_mask, positions, 120, causal=fused,
                                          row_writes=fused))
                caches.append(cache)
    finally:
        hook.remove()
    assert seen[0] is None and all(isinstance(s[1], torch.Tensor) for s in seen[1:]) and len(seen) > 2
    assert kernels.LAST not in vars(last)
    torch.testing.assert_close(logits[1], logits[0])
    real = attention_mask.bool()[:, None, :, None]
    width = input_ids.shape[1]
    for plain, written in zip(caches[0].layers, caches[1].layers, strict=True):
        for a, b in ((plain.keys, written.keys), (plain.values, written.values)):
            torch.testing.assert_close(b[:, :, :width].masked_select(real), a[:, :, :width].masked_select(real))
