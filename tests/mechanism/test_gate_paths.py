"""The gate's fast paths (fused evaluation, query chunks, torch.compile) against the reference rows.

Each comparison goes through `same_attention`, and each fast path has a deliberately broken twin that the same
comparison must reject, so a path that drifts from the reference cannot pass unnoticed.
"""

import pytest
import torch

from spartan_core.mechanism import gate
from spartan_core.mechanism.gate import (AttentionPath, causal_allowed, compile_enabled, gated_attention,
                                         query_rows_per_chunk)
from conftest import tiny_gpt2

BIASES = [0.0, 0.4, -0.3, float("inf"), -1e4]
EVALUATION = AttentionPath(need_weights=False)  # the fused path, when there is no gradient on CPU


def inputs(b=2, h=4, kv=2, t=11, d=8, padded=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(b, h, t, d, generator=g), torch.randn(b, kv, t, d, generator=g), torch.randn(b, kv, t, d, generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    if padded:
        mask[1, :3] = 0
    return q, k, v, causal_allowed(b, t, t, mask, q.device)


def run(q, k, v, allowed, seed=0, grad=False, gate_bias=0.0, sample=False, **path):
    """Output, stats and (with ``grad``) the gradients of a loss that reads both the output and the regulariser;
    ``path`` are the fields of the :class:`AttentionPath` taken."""
    q, k, v = (x.clone().requires_grad_(grad) for x in (q, k, v))
    torch.manual_seed(seed)
    with torch.set_grad_enabled(grad):
        out, _, stats = gated_attention(q, k, v, allowed, gate_bias=gate_bias, sample=sample,
                                        path=AttentionPath(**path))
        grads = None
        if grad:
            (out.square().sum() + stats.expected.sum()).backward()
            grads = [x.grad for x in (q, k, v)]
    return out.detach(), stats, grads


def same_attention(a, b, atol=2e-5):
    (out_a, stats_a, grads_a), (out_b, stats_b, grads_b) = a, b
    torch.testing.assert_close(out_a, out_b, atol=atol, rtol=1e-4)
    assert torch.equal(stats_a.kept, stats_b.kept) and torch.equal(stats_a.kept_by_position, stats_b.kept_by_position)
    torch.testing.assert_close(stats_a.expected.detach(), stats_b.expected.detach(), atol=atol, rtol=1e-4)
    assert torch.equal(stats_a.possible, stats_b.possible) and torch.equal(stats_a.queries, stats_b.queries)
    for ga, gb in zip(grads_a or [], grads_b or []):
        torch.testing.assert_close(ga, gb, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("bias", BIASES)
@pytest.mark.parametrize("sample", [False, True])
def test_fused_evaluation_equals_the_reference(bias, sample):
    q, k, v, allowed = inputs()
    same_attention(run(q, k, v, allowed, gate_bias=bias, sample=sample, need_weights=False),
                   run(q, k, v, allowed, gate_bias=bias, sample=sample, need_weights=True))


def test_fused_evaluation_returns_no_weights_and_is_used_only_without_a_gradient(monkeypatch):
    q, k, v, allowed = inputs()
    calls = []
    monkeypatch.setattr(gate, "_fused_eval_rows", lambda *a: calls.append(1) or gate._gated_rows(*a))
    with torch.no_grad():
        assert gated_attention(q, k, v, allowed, path=EVALUATION)[1] is not None  # (the stand-in returns weights)
        gated_attention(q, k, v, allowed)
    gated_attention(q.requires_grad_(), k, v, allowed, path=EVALUATION)
    assert calls == [1]


def test_a_fused_path_that_renormalises_is_caught(monkeypatch):
    q, k, v, allowed = inputs()
    reference = run(q, k, v, allowed, gate_bias=0.4, need_weights=True)

    def renormalised(q, k, v, allowed, gate_bias, sample, layer):
        out, _, expected, kept_rows = gate._gated_rows(q, k, v, allowed, gate_bias, sample, layer)
        keep = (gate._scores(q, k, layer.scale) + gate_bias > 0) & allowed
        fixed = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep).nan_to_num()
        return fixed, None, expected, kept_rows

    monkeypatch.setattr(gate, "_fused_eval_rows", renormalised)
    with pytest.raises(AssertionError):
        same_attention(run(q, k, v, allowed, gate_bias=0.4, need_weights=False), reference)


@pytest.mark.parametrize("bias", [0.4, -0.3, float("inf")])
@pytest.mark.parametrize("chunk", [1, 4, 10])
def test_query_chunks_equal_one_call_with_gradients(bias, chunk):
    q, k, v, allowed = inputs()
    same_attention(run(q, k, v, allowed, grad=True, gate_bias=bias, query_chunk=chunk),
                   run(q, k, v, allowed, grad=True, gate_bias=bias, query_chunk=0))


def sampled_reference(q, k, v, allowed, chunk, seed):
    """One unchunked call whose noise is drawn chunk by chunk in the order the chunked path draws it."""
    heads = q.shape[1]
    k_full, v_full = gate._repeat_kv(k, heads), gate._repeat_kv(v, heads)
    q, k_full, v_full = (x.clone().requires_grad_() for x in (q, k_full, v_full))
    scores = gate._scores(q, k_full, q.shape[-1] ** -0.5)
    torch.manual_seed(seed)
    noise = torch.cat([gate._logistic_noise(scores[:, :, s:s + chunk]) for s in range(0, q.shape[2], chunk)], 2)
    weights, expected, hard = gate._GatedSoftmax.apply(scores, allowed, 0.0, noise, None)
    out = weights @ v_full
    (out.square().sum() + expected.sum()).backward()
    return out.detach(), hard.sum(), q.grad


def test_chunks_recompute_the_forward_pass_masks_in_backward():
    q, k, v, allowed = inputs(kv=4)
    out, stats, grads = run(q, k, v, allowed, seed=3, grad=True, sample=True, query_chunk=4)
    ref_out, ref_kept, ref_q_grad = sampled_reference(q, k, v, allowed, 4, seed=3)
    torch.testing.assert_close(out, ref_out, atol=2e-5, rtol=1e-4)
    assert stats.kept.sum() == ref_kept
    torch.testing.assert_close(grads[0], ref_q_grad, atol=2e-5, rtol=1e-4)


def test_chunks_that_draw_fresh_noise_in_backward_are_caught(monkeypatch):
    q, k, v, allowed = inputs(kv=4)
    fresh = gate.checkpoint
    monkeypatch.setattr(gate, "checkpoint", lambda *a, **kw: fresh(*a, preserve_rng_state=False, **kw))
    _, _, grads = run(q, k, v, allowed, seed=3, grad=True, sample=True, query_chunk=4)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(grads[0], sampled_reference(q, k, v, allowed, 4, seed=3)[2], atol=2e-5, rtol=1e-4)


def saved_shapes(fn):
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
        fn()
    return shapes


def test_chunked_training_saves_no_tensor_of_every_query_by_every_key():
    q, k, v, allowed = inputs(t=32)
    q.requires_grad_()

    def square(chunk):
        return lambda: gated_attention(q, k, v, allowed, sample=True, path=AttentionPath(query_chunk=chunk))

    assert any(shape[-2:] == (32, 32) for shape in saved_shapes(square(0)))
    assert all(shape[-2:] != (32, 32) and shape[-1] * shape[-2] <= 32 * 8 for shape in saved_shapes(square(8))
               if len(shape) == 4)


def test_long_training_calls_chunk_automatically():
    assert query_rows_per_chunk(gate.CHUNK_ABOVE, gate.CHUNK_ABOVE) == gate.CHUNK_ABOVE
    assert query_rows_per_chunk(gate.CHUNK_ABOVE + 1, gate.CHUNK_ABOVE + 1) == gate.CHUNK_ROWS
    assert query_rows_per_chunk(2048, 2048, 0) == 2048 and query_rows_per_chunk(2048, 2048, 64) == 64


@pytest.fixture
def compile_like_eager():
    """Compiled code draws random numbers as eager does, so sampled masks can be compared."""
    import torch._inductor.config as inductor

    gate._COMPILED_ROWS.function = None
    with inductor.patch(fallback_random=True):
        yield
    gate._COMPILED_ROWS.function = None


def test_compiled_gate_equals_eager_with_sampled_masks(compile_like_eager, capsys):
    q, k, v, allowed = inputs()
    for seed in (0, 1):
        same_attention(run(q, k, v, allowed, seed=seed, grad=True, sample=True, gate_bias=0.4, compiled=True),
                       run(q, k, v, allowed, seed=seed, grad=True, sample=True, gate_bias=0.4))
    assert gate._COMPILED_ROWS.compile_seconds > 0
    assert "compiled the gated attention in" in capsys.readouterr().err


def test_a_wrong_compiled_gate_is_caught(compile_like_eager):
    q, k, v, allowed = inputs()
    reference = run(q, k, v, allowed, grad=True, sample=True)

    def stale_noise(q, k, v, allowed, gate_bias, sample, layer):
        return gate._gated_rows(q, k, v, allowed, gate_bias, False, layer)

    gate._COMPILED_ROWS.function = torch.compile(stale_noise)
    with pytest.raises(AssertionError):
        same_attention(run(q, k, v, allowed, grad=True, sample=True, compiled=True), reference)


def test_compile_switch(monkeypatch):
    monkeypatch.delenv("SPARTAN_COMPILE", raising=False)
    assert not compile_enabled(torch.device("cpu")) and compile_enabled(torch.device("cuda"))
    assert compile_enabled(torch.device("cpu"), True) and not compile_enabled(torch.device("cuda"), False)
    monkeypatch.setenv("SPARTAN_COMPILE", "0")
    assert not compile_enabled(torch.device("cuda"))
    monkeypatch.setenv("SPARTAN_COMPILE", "1")
    assert compile_enabled(torch.device("cpu"))
    monkeypatch.setenv("SPARTAN_COMPILE", "fast")
    with pytest.raises(ValueError, match=r"^SPARTAN_COMPILE: must be auto, 1 or 0, got 'fast'$"):
        compile_enabled(torch.device("cpu"))


def test_sparsify_refuses_a_bad_chunk_before_any_work():
    from spartan_core import sparsify

    with pytest.raises(ValueError, match=r"^query_chunk: must be a whole number >= 0 \(0: never chunk\), got -1$"):
        sparsify(tiny_gpt2(), query_chunk=-1)


def test_a_sparsified_model_gives_the_same_logits_whether_or_not_it_returns_attention_weights():
    from spartan_core import sparsify
    from spartan_core.mechanism.sparsify import layer_stats

    model = sparsify(tiny_gpt2(), gate_bias=0.2).eval()
    ids = torch.randint(model.config.vocab_size, (3, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fused = model(input_ids=ids).logits
        fused_kept = [s.kept for s in layer_stats(model)]
        full = model(input_ids=ids, output_attentions=True)
    assert full.attentions[0] is not None and full.attentions[0].shape[-2:] == (16, 16)
    torch.testing.assert_close(fused, full.logits, atol=1e-5, rtol=1e-4)
    assert all(torch.equal(a, s.kept) for a, s in zip(fused_kept, layer_stats(model)))
