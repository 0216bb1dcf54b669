"""LoRA through peft: adapters on the attention projections (and the MLPs if asked) of any decoder, the gate
still dense with open gates, only the adapters trained, merged into a plain transformers model at the end."""

import math

import pytest
import torch
import transformers

from conftest import tiny_gpt2, token_blocks
from spartan_core import SparseRecipe, post_train, sparsify
from spartan_core.training.lora import lora_targets, merge_lora, with_lora


def tiny_llama():
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=50,
                                      max_position_embeddings=64)
    return transformers.LlamaForCausalLM(config)


def test_adapters_go_on_the_attention_projections_and_on_the_mlps_only_when_asked():
    llama = tiny_llama()
    assert lora_targets(llama) == [f"model.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in "qkvo"]
    assert len(lora_targets(llama, mlp=True)) == 8 + 6
    assert lora_targets(tiny_gpt2()) == [f"transformer.h.{i}.attn.{p}" for i in range(2) for p in ("c_attn", "c_proj")]


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_with_open_gates_a_lora_model_is_the_dense_model(make):
    torch.manual_seed(0)
    model = make().eval()
    ids = token_blocks(n=3, t=12)["input_ids"]
    with torch.no_grad():
        dense = model(input_ids=ids).logits
        adapted = with_lora(sparsify(model, gate_bias=math.inf), rank=4, mlp=True)
        torch.testing.assert_close(adapted(input_ids=ids).logits, dense, atol=1e-5, rtol=1e-5)


def test_a_lora_post_training_run_closes_edges_trains_only_adapters_and_merges(one_torch_thread):
    torch.manual_seed(0)
    model = tiny_llama()
    frozen = {name: p.detach().clone() for name, p in model.named_parameters()
              if "q_proj" not in name and "k_proj" not in name and "v_proj" not in name and "o_proj" not in name}
    data = token_blocks(n=32, t=16)
    recipe = SparseRecipe(steps=40, batch_size=8, lr=1e-2, eval_every=10, tau=10.0, beta_init=1.0, eta=1.0,
                          lora_rank=4)
    result = post_train(model, data, data, recipe, progress=False)
    assert type(result.model) is transformers.LlamaForCausalLM
    assert result.metrics["sparse"]["kept_fraction"] < result.metrics["gated_before_training"]["kept_fraction"] - 0.05
    for name, p in result.model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name


def test_lora_settings_are_refused_by_name():
    with pytest.raises(ValueError, match=r"^lora_rank: must be an integer >= 1 \(None: train every weight\), got 0$"):
        SparseRecipe(lora_rank=0)
    with pytest.raises(ValueError, match=r"^lora_mlp: adapters on the MLPs need a lora_rank$"):
        SparseRecipe(lora_mlp=True)
    with pytest.raises(ValueError, match=r"^lora_rank: must be an integer >= 1, got -2$"):
        with_lora(tiny_llama(), rank=-2)
    assert merge_lora(tiny_gpt2()).__class__ is transformers.GPT2LMHeadModel


def test_models_cached_before_lora_existed_keep_their_keys():
    assert "lora_rank" not in SparseRecipe().identity() and SparseRecipe(lora_rank=2).identity()["lora_rank"] == 2


def test_a_lora_run_ends_with_the_same_weights_whatever_the_callers_random_state(one_torch_thread):
    """Adapters are initialised from the recipe's seed: the same recipe on the same model is the same run."""
    data = token_blocks(n=16, t=12)
    recipe = SparseRecipe(steps=3, batch_size=8, lr=1e-2, eval_every=0, tau=10.0, lora_rank=2)
    finals = []
    for caller_seed in (1, 2):
        torch.manual_seed(0)
        model = tiny_gpt2()
        torch.manual_seed(caller_seed)  # whatever the caller drew before must not matter
        finals.append(post_train(model, data, data, recipe, progress=False).model.state_dict())
    assert all(torch.equal(finals[0][name], finals[1][name]) for name in finals[0])
