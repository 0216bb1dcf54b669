"""spartan_core.studies.common (held-out samples, head and token names) and the attention maps of
spartan_core.mechanism.attention that the studies read."""

import math
from types import SimpleNamespace

import torch

from conftest import tiny_gpt2
from spartan_core.data import addition
from spartan_core.mechanism.attention import attention_maps, heads_at_or_above
from spartan_core.mechanism.sparsify import dense, layer_stats, sparsify
from spartan_core.studies import common


def test_attention_maps_dense_sparse_and_open_gates():
    model = tiny_gpt2().eval()
    ids = torch.randint(0, 50, (6, 11))
    dense_maps = attention_maps(model, ids)
    assert dense_maps.shape == (6, 2, 4, 11, 11)
    assert torch.allclose(dense_maps.sum(-1), torch.ones(6, 2, 4, 11), atol=1e-5)
    assert (dense_maps.triu(1) == 0).all()
    sparsify(model, gate_bias=math.inf)
    assert torch.allclose(attention_maps(model, ids), dense_maps, atol=1e-6)
    sparsify(model, gate_bias=0.0)
    kept_maps = attention_maps(model, ids)
    kept_by_layer = (kept_maps > 0).sum(dim=(0, 3, 4)).double()  # [L, H]
    assert torch.equal(kept_by_layer, torch.stack([s.kept.double().cpu() for s in layer_stats(model)]))
    first = kept_maps[:, 0]  # layer 0 sees the same input in both models
    assert torch.allclose(first, dense_maps[:, 0] * (first > 0), atol=1e-6), "kept = dense x mask, no renorm"
    assert float((kept_maps.sum(-1) < 1 - 1e-4).float().mean()) > 0
    dense(model)


def test_heldout_blocks_caps_rows_of_a_models_own_split():
    ids = torch.arange(40).view(10, 4)
    loaded = SimpleNamespace(data={"validation": {"input_ids": ids, "labels": ids.clone()}},
                             info={"heldout_split": "validation"})
    name, data = common.heldout_blocks(loaded, max_blocks=3, block_size=4)
    assert name == "validation (3 of 10 rows)" and data["input_ids"][:, 0].tolist() == [0, 16, 36]
    assert torch.equal(data["labels"], data["input_ids"])
    name, data = common.heldout_blocks(loaded, max_blocks=2, block_size=4, spread=False)
    assert data["input_ids"][:, 0].tolist() == [0, 4]
    name, data = common.heldout_blocks(loaded, max_blocks=50, block_size=4)
    assert name == "validation" and len(data["input_ids"]) == 10


def test_heads_at_or_above_are_layer_head_pairs_strongest_first():
    scores = torch.tensor([[0.1, 0.5], [0.7, 0.3]])
    assert heads_at_or_above(scores, 0.3) == [(1, 0), (0, 1), (1, 1)]
    assert heads_at_or_above(scores, 0.9) == []
    assert common.head_name(1, 0) == "a1.h0"


def test_token_labels_one_per_token():
    assert common.token_labels(addition.tokenizer(), addition.encode("53+21=00074")) == list("53+21=00074")


def test_unavailable_model_says_why():
    missing = common.Unavailable("gpt2", "HF_HUB_OFFLINE is set")
    assert missing.sentence == "gpt2 is pending, not measured here: HF_HUB_OFFLINE is set."
