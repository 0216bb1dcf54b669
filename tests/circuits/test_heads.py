import copy

import pytest
import torch
import transformers

from spartan_core.circuits import effective_heads, head_ablation_effects, heads_above
from spartan_core.data.induction import induction_data
from spartan_core.training.evaluate import evaluate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEAD_DIM = 8


def gpt2(seed=0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=40, n_positions=32, resid_pdrop=0.0,
                                     embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.2)
    return transformers.GPT2LMHeadModel(config).eval()


def probe():
    return induction_data(6, 8, 40, seed=1, low=1, bos_token_id=0)


def test_a_head_that_writes_a_constant_has_no_effect_and_the_others_have_some():
    model = gpt2()
    columns = slice(2 * 32 + 1 * HEAD_DIM, 2 * 32 + 2 * HEAD_DIM)  # the values of layer 1, head 1
    with torch.no_grad():
        model.transformer.h[1].attn.c_attn.weight[:, columns] = 0.0
        model.transformer.h[1].attn.c_attn.bias[columns] = 0.7
    effects = head_ablation_effects(model, probe(), batch_size=4)
    assert effects.shape == (2, 4)
    assert abs(float(effects[1, 1])) < 1e-5, "its output is the same at every position, so its mean changes nothing"
    others = torch.cat([effects[0], effects[1, [0, 2, 3]]])
    assert (others.abs() > 1e-4).all()


def test_each_effect_equals_folding_the_heads_mean_into_the_projections_bias():
    """An independent way to mean-ablate head (l, h): drop its rows of the output projection and add its mean's
    contribution to the bias. The CE change must match the hook's, head by head."""
    model, data = gpt2(seed=3), probe()
    effects = head_ablation_effects(model, data, batch_size=4)
    intact = evaluate(model, data, 4).ce
    captured = []
    handle = model.transformer.h[0].attn.c_proj.register_forward_pre_hook(
        lambda module, args: captured.append(args[0].reshape(-1, 32)))
    evaluate(model, data, 64)
    handle.remove()
    mean = torch.cat(captured).mean(0)
    for head in range(4):
        rows = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
        folded = copy.deepcopy(model)
        proj = folded.transformer.h[0].attn.c_proj
        with torch.no_grad():
            proj.bias += mean[rows] @ proj.weight[rows]
            proj.weight[rows] = 0.0
        assert evaluate(folded, data, 4).ce - intact == pytest.approx(float(effects[0, head]), abs=1e-5)


def test_llama_with_grouped_query_attention_has_one_effect_per_query_head():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      hidden_size=32, intermediate_size=64, vocab_size=40,
                                      max_position_embeddings=32, initializer_range=0.2)
    effects = head_ablation_effects(transformers.LlamaForCausalLM(config).eval(), probe(), batch_size=4)
    assert effects.shape == (2, 4) and torch.isfinite(effects).all()


def test_effective_heads_counts_equal_heads_and_ignores_negative_scores():
    assert effective_heads(torch.tensor([[1.0, 0.0], [0.0, 0.0]])) == pytest.approx(1.0)
    assert effective_heads(torch.full((2, 4), 0.3)) == pytest.approx(8.0)
    assert effective_heads(torch.tensor([[0.5, 0.5], [-0.5, 0.0]])) == pytest.approx(2.0)
    assert effective_heads(torch.zeros(3, 3)) == 0.0
    assert heads_above(torch.tensor([[0.2, 0.1], [0.05, 0.11]]), 0.1) == 2
