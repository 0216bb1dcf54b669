import pytest
import torch
import transformers

from spartan_core import count_edges, dense, sparsify
from spartan_core.mechanism.sparsify import attention_modules, expected_fraction, layer_stats

SMALL = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def build(arch):
    if arch == "gpt2":
        cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=64, n_positions=64,
                                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
        cls = transformers.GPT2LMHeadModel
    elif arch == "llama":
        cfg, cls = transformers.LlamaConfig(num_key_value_heads=2, **SMALL), transformers.LlamaForCausalLM
    elif arch == "qwen2":
        cfg, cls = transformers.Qwen2Config(num_key_value_heads=2, **SMALL), transformers.Qwen2ForCausalLM
    elif arch == "olmo":
        cfg, cls = transformers.OlmoConfig(num_key_value_heads=4, **SMALL), transformers.OlmoForCausalLM
    elif arch == "olmo2":
        cfg, cls = transformers.Olmo2Config(num_key_value_heads=2, **SMALL), transformers.Olmo2ForCausalLM
    elif arch == "gpt_neox":
        cfg = transformers.GPTNeoXConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, max_position_embeddings=64, bos_token_id=1,
                                         eos_token_id=2, pad_token_id=0)
        cls = transformers.GPTNeoXForCausalLM
    cfg._attn_implementation = "eager"
    return cls(cfg).eval()


ARCHS = ["gpt2", "llama", "qwen2", "olmo", "olmo2", "gpt_neox"]


@pytest.mark.parametrize("arch", ARCHS)
def test_open_gates_reproduce_eager_logits(arch):
    model = build(arch)
    ids = torch.randint(3, 64, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :4] = 0  # left padding
    with torch.no_grad():
        reference = model(ids, attention_mask=mask).logits
        sparsify(model, gate_bias=float("inf"))
        gated = model(ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(gated[real], reference[real], atol=1e-5, rtol=1e-5)
    stats = layer_stats(model)
    assert len(stats) == 2 and all(s.kept_fraction == 1.0 for s in stats)
    # padding: 12*13/2 causal pairs for row 0, 8*9/2 for row 1
    assert stats[0].possible[0].item() == 78 + 36
    dense(model)
    assert model.config._attn_implementation == "eager"
    with torch.no_grad():
        torch.testing.assert_close(model(ids, attention_mask=mask).logits, reference)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_generate_with_kv_cache_matches_full_recompute(arch):
    model = sparsify(build(arch), gate_bias=0.0)
    prompt = torch.randint(3, 64, (1, 6))
    generated = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
    no_cache = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=0)
    assert generated.shape == (1, 12)
    assert torch.equal(generated, no_cache)


def test_train_mode_samples_and_eval_mode_is_deterministic():
    model = sparsify(build("gpt2"))
    ids = torch.randint(3, 64, (4, 16))
    with torch.no_grad():
        model.eval()
        a = model(ids).logits
        b = model(ids).logits
        model.train()
        c = model(ids).logits
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_regulariser_is_differentiable_and_reset_every_forward():
    model = sparsify(build("llama"))
    model.train()
    ids = torch.randint(3, 64, (2, 10))
    model(ids)
    first = expected_fraction(model)
    first.backward()
    grads = [p.grad for n, p in model.named_parameters() if "q_proj" in n]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    model(ids[:, :5])
    heads, batch, pairs = 4, 2, 5 * 6 // 2
    assert layer_stats(model)[0].possible.sum().item() == heads * batch * pairs


def test_count_edges_streams_and_matches_layer_stats():
    model = sparsify(build("gpt2"))
    ids = torch.randint(3, 64, (6, 16))
    batches = [{"input_ids": ids[i : i + 2]} for i in range(0, 6, 2)]
    counts = count_edges(model, batches)
    single = count_edges(model, [{"input_ids": ids}])
    assert counts.kept == single.kept and counts.possible == single.possible == 2 * 4 * 6 * 136
    assert abs(counts.kept_fraction - single.kept_fraction) < 1e-12
    assert len(counts.per_head) == 2 and len(counts.per_head[0]) == 4
    assert len(counts.by_position) == 16
    # kept keys per query can never exceed the causal maximum, and position 0 has one possible key
    assert 0 <= counts.by_position[0] <= 1
    # without padding, position t has t + 1 possible keys
    for t in (0, 7, 15):
        assert counts.fraction_by_position[t] == pytest.approx(counts.by_position[t] / (t + 1))
    assert counts.kept_per_query == pytest.approx(counts.kept / (counts.queries * 4 * 2))
    assert counts.to_dict()["kept"] == counts.kept


def test_count_edges_memory_does_not_grow_with_batches():
    model = sparsify(build("gpt2"))
    from spartan_core.mechanism.token_edges import EdgeCounter

    counter = EdgeCounter()
    for _ in range(20):
        model(torch.randint(3, 64, (2, 8)))
        counter.add(layer_stats(model))
    assert counter.kept.shape == (2, 4) and counter.kept_by_position.numel() == 8


def test_count_edges_refuses_a_dense_model():
    with pytest.raises(ValueError, match="model"):
        count_edges(build("gpt2"), [{"input_ids": torch.zeros(1, 4, dtype=torch.long)}])


def test_attention_modules_found_in_layer_order():
    model = build("gpt_neox")
    assert [m.layer_idx for m in attention_modules(model)] == [0, 1]
    sparsify(model)
    sparsify(model, gate_bias=2.0)  # idempotent: only the bias changes
    assert model._spartan_state.gate_bias == 2.0


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_bf16_autocast_training_step_is_finite(arch):
    """The CUDA path runs under bf16 autocast; CPU autocast exercises the same dtype handling here."""
    model = sparsify(build(arch)).train()
    ids = torch.randint(3, 64, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(ids, labels=ids)
        loss = output.loss + 0.1 * expected_fraction(model)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
