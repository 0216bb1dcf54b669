"""spartan_core.analysis: attention maps, per-class averages, carry selectivity, graph drawing, edge/loss rows."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from conftest import tiny_gpt2  # noqa: E402
from spartan_core import analysis  # noqa: E402
from spartan_core.mechanism.sparsify import dense, layer_stats, sparsify  # noqa: E402


def _ids(n=6, t=11, vocab=50):
    return torch.randint(0, vocab, (n, t))


def test_attention_maps_dense_sparse_and_open_gates():
    model = tiny_gpt2().eval()
    ids = _ids()
    dense_maps = analysis.attention_maps(model, ids)
    assert dense_maps.shape == (6, 2, 4, 11, 11)
    assert torch.allclose(dense_maps.sum(-1), torch.ones(6, 2, 4, 11), atol=1e-5)
    assert (dense_maps.triu(1) == 0).all()
    sparsify(model, gate_bias=math.inf)
    assert torch.allclose(analysis.attention_maps(model, ids), dense_maps, atol=1e-6)
    sparsify(model, gate_bias=0.0)
    kept_maps = analysis.attention_maps(model, ids)
    stats = layer_stats(model)
    kept_by_layer = (kept_maps > 0).sum(dim=(0, 3, 4)).double()  # [L, H]
    assert torch.equal(kept_by_layer, torch.stack([s.kept.double().cpu() for s in stats]))
    first = kept_maps[:, 0]  # layer 0 sees the same input in both models
    assert torch.allclose(first, dense_maps[:, 0] * (first > 0), atol=1e-6), "kept = dense x mask, no renorm"
    assert float((kept_maps.sum(-1) < 1 - 1e-4).float().mean()) > 0
    dense(model)


def test_attention_by_class_matches_manual_means():
    model = tiny_gpt2().eval()
    ids = _ids(7)
    classes = torch.tensor([0, 1, 0, 2, 1, 1, 0])
    means = analysis.attention_by_class(model, ids, classes, n_classes=4, batch_size=3)
    maps = analysis.attention_maps(model, ids).double()
    for c in range(3):
        assert torch.allclose(means.weight[c], maps[classes == c].mean(0), atol=1e-6)
    assert means.count.tolist() == [3, 3, 1, 0]
    causal = torch.ones(11, 11).tril().bool()
    assert (means.kept[:3][..., causal] == 1).all(), "a dense model uses every causal edge"
    assert torch.allclose(means.pooled([0, 2], "weight"), maps[(classes == 0) | (classes == 2)].mean(0), atol=1e-6)
    assert torch.isnan(means.pooled([3])).all()
    with pytest.raises(ValueError, match="classes"):
        analysis.attention_by_class(model, ids, torch.tensor([0, 1, 0, 5, 1, 1, 0]), n_classes=4)
    with pytest.raises(ValueError, match="measure"):
        means.pooled([0], "mean")


def _planted_means():
    """4 carry classes, 2 layers x 2 heads, 11 x 11; layer 1 head 0 reads a0 from s2 only with a units carry."""
    kept = torch.zeros(4, 2, 2, 11, 11, dtype=torch.float64)
    kept[:, 0, 1, 7, 0] = 0.5  # the same in every class: not selective
    for c in analysis.CARRY_FLAGS["units"]:
        kept[c, 1, 0, 8, 1] = 1.0
    kept[0, 1, 0, 8, 1] = 0.1
    return analysis.ClassMeans(weight=kept.clone(), kept=kept, count=torch.tensor([10.0, 10.0, 10.0, 10.0]))


def test_carry_selectivity_finds_the_planted_edge():
    frame = analysis.carry_selectivity(_planted_means())
    top = frame.iloc[0]
    assert (top["carry"], top["layer"], top["head"], top["query"], top["key"]) == ("units", 1, 0, 8, 1)
    assert top["query_token"] == "s2" and top["predicts"] == "s1" and top["key_token"] == "a0"
    assert top["with_carry"] == pytest.approx(1.0) and top["without_carry"] == pytest.approx(0.05)
    assert bool(top["relevant"])
    flat = frame[(frame["layer"] == 0) & (frame["head"] == 1) & (frame["query"] == 7) & (frame["key"] == 0)]
    assert np.allclose(flat["selectivity"], 0.0)
    assert len(frame) == 2 * 2 * 2 * len(analysis.ANSWER_QUERIES) * len(analysis.OPERAND_KEYS)


def test_top_reads_ranks_keys():
    means = _planted_means()
    reads = analysis.top_reads(means, layer=1, measure="kept", k=1)
    row = reads[(reads["head"] == 0) & (reads["query"] == 8)].iloc[0]
    assert row["read_1"].startswith("a0") and row["predicts"] == "s1"
    assert row["total_kept"] == pytest.approx((1.0 + 0.1 + 1.0 + 0.0) / 4)


def test_draw_attention_graph_draws_one_line_per_edge_above_threshold():
    maps = torch.zeros(2, 3, 5, 5)
    maps[0, 0, 4, 1] = 0.9
    maps[1, 2, 3, 3] = 0.03
    maps[1, 1, 2, 0] = 0.01  # below the threshold
    maps[0, 1, 1, 3] = 0.9  # acausal: never drawn
    fig, ax = plt.subplots()
    assert analysis.draw_attention_graph(ax, maps, list("abcde"), min_weight=0.02) == 2
    with pytest.raises(ValueError, match="tokens"):
        analysis.draw_attention_graph(ax, maps, list("abc"))
    with pytest.raises(ValueError, match="maps"):
        analysis.draw_attention_graph(ax, maps[0], list("abcde"))
    plt.close(fig)


def test_heads_above_orders_by_score():
    scores = torch.tensor([[0.1, 0.5], [0.7, 0.3]])
    assert analysis.heads_above(scores, 0.3) == ["L1H0", "L0H1", "L1H1"]
    assert analysis.heads_above(scores, 0.9) == []


def test_induction_probe_skips_special_tokens():
    class Tok:
        all_special_ids = [0, 1]
        bos_token_id = None
        eos_token_id = 0

    data = analysis.induction_probe(Tok(), vocab_size=64, n_sequences=3, half_length=5)
    assert data["input_ids"].shape == (3, 11) and (data["attention_mask"] == 1).all()
    assert (data["input_ids"][:, 0] == 0).all() and (data["input_ids"][:, 1:] >= 2).all()
    assert torch.equal(data["input_ids"][:, 1:6], data["input_ids"][:, 6:])


def test_edges_and_loss_pending_for_an_unreachable_hub_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    row = analysis.edges_and_loss("spartan-test-org/no-such-model", post_train=False)
    assert row["status"] == "pending" and "HF_HUB_OFFLINE" in row["reason"]
    assert "dense_ce" not in row


def test_edges_and_loss_untrained_gate_on_a_toy():
    row = analysis.edges_and_loss("addition-4l", post_train=False, dense_overrides={"steps": 30}, eval_blocks=500,
                                  batch_size=500)
    assert row["status"] == "measured" and row["heldout"] == "test (500 of 2000 rows)" and row["context_length"] == 11
    assert row["dense_ce"] > 0 and row["gated_ce"] > 0
    assert 0 < row["gated_kept_fraction"] < 1
    assert np.array(row["gated_per_head"]).shape == (4, 4)
    assert row["gated_ce_increase_pct"] == pytest.approx(100 * (row["gated_ce"] / row["dense_ce"] - 1))


def test_parse_problem():
    assert analysis.parse_problem("53+21") == (53, 21)
    assert analysis.parse_problem(" 7+99") == (7, 99)
    for bad in ("53-21", "100+1", "a+b", "1+2+3"):
        with pytest.raises(ValueError, match="^examples:"):
            analysis.parse_problem(bad)


def test_token_labels_one_per_token():
    from spartan_core.data import addition

    labels = analysis.token_labels(addition.tokenizer(), addition.encode("53+21=00074"))
    assert labels == list("53+21=00074")


def test_heldout_blocks_caps_rows_of_a_models_own_split():
    from types import SimpleNamespace

    ids = torch.arange(40).view(10, 4)
    loaded = SimpleNamespace(data={"validation": {"input_ids": ids, "labels": ids.clone()}})
    name, data = analysis.heldout_blocks(loaded, max_blocks=3, block_size=4)
    assert name == "validation (3 of 10 rows)" and data["input_ids"][:, 0].tolist() == [0, 16, 36]
    assert torch.equal(data["labels"], data["input_ids"])
    name, data = analysis.heldout_blocks(loaded, max_blocks=2, block_size=4, spread=False)
    assert data["input_ids"][:, 0].tolist() == [0, 4]
    name, data = analysis.heldout_blocks(loaded, max_blocks=50, block_size=4)
    assert name == "validation" and len(data["input_ids"]) == 10
