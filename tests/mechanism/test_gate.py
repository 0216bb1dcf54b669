import torch
import pytest

from spartan_core import sparse_attention
from spartan_core.mechanism.gate import gated_attention, causal_allowed


def reference_attention(q, k, v, mask=None):
    """Plain causal softmax attention, written independently of the library."""
    t = q.shape[2]
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    allowed = torch.ones(t, t, dtype=torch.bool).tril()
    if mask is not None:
        allowed = allowed & mask.bool()[:, None, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, -1) @ v, allowed


def qkv(b=2, h=3, t=7, d=8, kv_heads=None):
    kv_heads = kv_heads or h
    return torch.randn(b, h, t, d), torch.randn(b, kv_heads, t, d), torch.randn(b, kv_heads, t, d)


def test_open_gates_equal_dense_attention():
    q, k, v = qkv()
    out, stats = sparse_attention(q, k, v, gate_bias=float("inf"))
    ref, _ = reference_attention(q, k, v)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    assert stats.kept_fraction == 1.0
    assert torch.equal(stats.possible, torch.full((3,), 2 * 7 * 8 / 2, dtype=torch.float64))


def test_deterministic_mask_keeps_positive_logits_without_renormalising():
    q, k, v = qkv(b=1, h=1, t=5, d=4)
    out, stats = sparse_attention(q, k, v, gate_bias=0.5)
    scores = (q @ k.transpose(-1, -2) / 2.0)[0, 0]
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    probs = torch.softmax(scores.masked_fill(~causal, float("-inf")), -1)
    keep = (scores + 0.5 > 0) & causal
    torch.testing.assert_close(out[0, 0], (probs * keep) @ v[0, 0])
    assert stats.kept.item() == keep.sum().item()
    torch.testing.assert_close(stats.expected, (torch.sigmoid(scores + 0.5) * causal).sum().reshape(1))


def test_rows_with_every_edge_closed_are_zero_not_nan():
    q, k, v = qkv()
    out, stats = sparse_attention(q, k, v, gate_bias=-1e4)
    assert torch.isfinite(out).all() and out.abs().max() == 0
    assert stats.kept.sum() == 0


def test_padding_keys_and_queries_are_not_counted():
    q, k, v = qkv(b=2, h=2, t=6)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    out, stats = sparse_attention(q, k, v, attention_mask=mask, gate_bias=float("inf"))
    # row 0: 21 causal pairs; row 1 has 4 real tokens: 10 pairs; per head
    assert stats.possible.tolist() == [31.0, 31.0]
    assert stats.queries.item() == 10
    ref, _ = reference_attention(q, k, v, mask)
    torch.testing.assert_close(out[1, :, 2:], ref[1, :, 2:], atol=1e-6, rtol=1e-5)
    assert torch.isfinite(out).all()
    assert out[1, :, :2].abs().max() == 0


def test_grouped_query_attention_repeats_kv_heads():
    q, k, v = qkv(h=4, kv_heads=2)
    out, _ = sparse_attention(q, k, v, gate_bias=float("inf"))
    ref, _ = reference_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1))
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="heads"):
        sparse_attention(torch.randn(1, 3, 4, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8))


def test_sampled_mask_is_binary_with_straight_through_gradient():
    q, k, v = qkv(b=4, h=2, t=16)
    q.requires_grad_(True)
    torch.manual_seed(1)
    out, stats = sparse_attention(q, k, v, sample=True)
    allowed = causal_allowed(4, 16, 16, None, q.device)
    _, weights, _ = gated_attention(q.detach(), k, v, allowed, sample=True)
    probs_nonzero = weights[weights != 0]
    assert probs_nonzero.numel() > 0
    out.sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    # the regulariser has its own gradient path
    q.grad = None
    stats2 = sparse_attention(q, k, v, sample=True)[1]
    stats2.expected_fraction.backward()
    assert q.grad.abs().sum() > 0


def test_sampling_rate_matches_gate_probability():
    q = torch.zeros(1, 1, 64, 4)
    k = torch.zeros(1, 1, 64, 4)
    v = torch.randn(1, 1, 64, 4)
    _, stats = sparse_attention(q, k, v, gate_bias=1.0, sample=True)
    expected = torch.sigmoid(torch.tensor(1.0)).item()
    assert abs(stats.kept_fraction - expected) < 0.03


def test_bf16_inputs():
    q, k, v = (t.bfloat16() for t in qkv())
    out, stats = sparse_attention(q, k, v, gate_bias=float("inf"))
    ref, _ = reference_attention(*(t.float() for t in (q, k, v)))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="attention_mask"):
        sparse_attention(*qkv(b=2, t=5), attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="batch, heads, time"):
        sparse_attention(torch.randn(2, 5, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8))


def _reference_gate(scores, allowed, bias, noise):
    """The straight-through estimator written with plain autograd ops."""
    logits = scores + bias
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1).nan_to_num(0.0)  # padding rows
    noisy = logits if noise is None else logits + noise
    soft = torch.sigmoid(noisy)
    hard = (noisy > 0).to(soft.dtype)
    gate = hard if noise is None else hard + soft - soft.detach()
    expected = (torch.sigmoid(logits) * allowed).sum((0, 2, 3))
    return probs * gate * allowed, expected


@pytest.mark.parametrize("sample", [True, False])
def test_fused_gate_backward_matches_plain_autograd(sample):
    from spartan_core.mechanism.gate import _GatedSoftmax

    scores = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    allowed = causal_allowed(2, 6, 6, torch.tensor([[1] * 6, [0, 1, 1, 1, 1, 1]]), scores.device)
    noise = torch.logit(torch.rand_like(scores)) if sample else None
    d_weights, d_expected = torch.randn_like(scores), torch.randn(3, dtype=torch.float64)
    a = scores.clone().requires_grad_(True)
    weights, expected, _ = _GatedSoftmax.apply(a, allowed, 0.3, noise, None)
    ((weights * d_weights).sum() + (expected * d_expected).sum()).backward()
    b = scores.clone().requires_grad_(True)
    ref_weights, ref_expected = _reference_gate(b, allowed, 0.3, noise)
    ((ref_weights * d_weights).sum() + (ref_expected * d_expected).sum()).backward()
    torch.testing.assert_close(weights, ref_weights)
    torch.testing.assert_close(expected, ref_expected)
    torch.testing.assert_close(a.grad, b.grad)


def test_float64_inputs_stay_float64_inside_the_gate():
    """The gate computes in at least float32 but keeps float64 when given it (checked against a float64
    reference of the mechanism: softmax over causal keys times the deterministic mask, not renormalised)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g, dtype=torch.float64) for _ in range(3))
    out, _ = sparse_attention(q, k, v, gate_bias=0.3)
    scores = q @ k.transpose(-1, -2) / 8**0.5
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    probs = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
    reference = (probs * ((scores + 0.3 > 0) & causal)) @ v
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, reference, atol=1e-12, rtol=0)


def test_a_nan_gate_bias_is_refused():
    from conftest import tiny_gpt2
    from spartan_core import count_edges, sparsify

    with pytest.raises(ValueError, match="^gate_bias"):
        sparsify(tiny_gpt2(), gate_bias=float("nan"))
    model = sparsify(tiny_gpt2())
    with torch.no_grad():
        model.transformer.h[1].attn.c_attn.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="^model: weight transformer.h.1.attn.c_attn.bias is not finite"):
        count_edges(model, [{"input_ids": torch.ones(1, 4, dtype=torch.long)}])
