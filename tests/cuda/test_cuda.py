"""What only a CUDA GPU can check: bf16 autocast through the gate, the compiled and chunked gate on CUDA, the
automatic micro-batch search against the allocator's real limit, and activation checkpointing. ``make gpu-check``
runs them; elsewhere they are skipped."""

import math

import pytest
import torch

from conftest import tiny_gpt2, token_blocks
from spartan_core import sparsify
from spartan_core.mechanism import gate
from spartan_core.mechanism.gate import AttentionPath, causal_allowed, gated_attention
from spartan_core.training import TrainConfig, autocast_for, train
from spartan_core.training.batches import find_grad_accum
from spartan_core.objective.geco import GECO
from spartan_core.objective.sparsity import SparsityUnderCE

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")


def test_bf16_autocast_with_open_gates_is_dense_attention_and_trains():
    model = tiny_gpt2().to(CUDA).eval()
    ids = token_blocks()["input_ids"].to(CUDA)
    with torch.no_grad(), autocast_for(CUDA, True):
        dense_logits = model(input_ids=ids).logits.float()
        sparsify(model, gate_bias=math.inf)
        sparse_logits = model(input_ids=ids).logits.float()
    torch.testing.assert_close(sparse_logits, dense_logits, atol=3e-2, rtol=3e-2)
    sparsify(model, gate_bias=0.0)
    model.train()
    with autocast_for(CUDA, True):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _gate_run(q, k, v, allowed, seed, sample=True, **paths):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    torch.manual_seed(seed)
    out, _, stats = gated_attention(q, k, v, allowed, sample=sample, gate_bias=0.3, path=AttentionPath(**paths))
    (out.square().sum() + stats.expected.sum()).backward()
    return out, stats.kept, q.grad, k.grad, v.grad


def test_compiled_and_query_chunked_gates_equal_the_reference_on_cuda():
    import torch._inductor.config as inductor

    g = torch.Generator(device=CUDA).manual_seed(0)
    q, k, v = (torch.randn(2, 4, 96, 16, device=CUDA, generator=g) for _ in range(3))
    allowed = causal_allowed(2, 96, 96, None, CUDA)
    thresholded = _gate_run(q, k, v, allowed, seed=1, sample=False)
    for got, want in zip(_gate_run(q, k, v, allowed, seed=1, sample=False, query_chunk=32), thresholded):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    reference = _gate_run(q, k, v, allowed, seed=1)
    gate._COMPILED_ROWS.function = None
    try:
        with inductor.patch(fallback_random=True):
            compiled = _gate_run(q, k, v, allowed, seed=1, compiled=True)
    finally:
        gate._COMPILED_ROWS.function = None
    for got, want in zip(compiled, reference):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


def test_automatic_micro_batch_search_fits_the_allocators_real_limit():
    """Cap the process at 3 GiB: a 128-row batch of 512 tokens with a 32k vocabulary needs far more (the logits
    alone are 8 GiB), so the search must split it, and a full step at the found micro-batch must run under the cap."""
    total = torch.cuda.get_device_properties(CUDA).total_memory
    cap = 3 * 2**30
    model = sparsify(tiny_gpt2(vocab=32000, layers=2, width=64, positions=512)).to(CUDA).train()
    ids = torch.randint(32000, (128, 512), device="cpu")
    data = {"input_ids": ids, "labels": ids.clone()}
    config = TrainConfig(steps=1, batch_size=128, grad_accum="auto", device="cuda", progress=False)
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(cap / total)
    try:
        accum = find_grad_accum(model, data, config, SparsityUnderCE(GECO(tau=1.0)))
        torch.cuda.reset_peak_memory_stats()
        train(model, data, config=TrainConfig(**{**config.__dict__, "grad_accum": accum}),
              objective=SparsityUnderCE(GECO(tau=1.0)))
        peak = torch.cuda.max_memory_allocated()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert accum > 1 and peak <= cap


def test_activation_checkpointing_trains_the_same_weights():
    data = token_blocks(n=16, t=32)
    weights = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = sparsify(tiny_gpt2()).to(CUDA)
        train(model, data, config=TrainConfig(steps=4, batch_size=8, device="cuda", bf16=False, progress=False,
                                              activation_checkpointing=checkpointing),
              objective=SparsityUnderCE(GECO(tau=1.0)))
        weights.append({name: p.detach().clone() for name, p in model.named_parameters()})
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, atol=1e-5, rtol=1e-4, msg=name)
