"""spartan_core.studies.addition_algorithm and addition_carry: per-class attention averages, carry selectivity, top
reads, Figure 1, the toy circuit, the seeds' sentences and tables, and the claim's rule."""

import copy
import json
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import tiny_gpt2
from spartan_core.data import addition
from spartan_core.mechanism.attention import attention_maps
from spartan_core.mechanism.class_means import attention_by_class
from spartan_core.mechanism.sparsify import sparsify
from spartan_core.studies import addition_algorithm as study
from spartan_core.studies import addition_carry, addition_reads
from spartan_core.studies.common import ModelPair
from spartan_core.studies.seeds import Seeds


def _planted_means():
    """4 carry classes, 2 layers x 2 heads, 11 x 11; layer 1 head 0 reads a0 from s2 only with a units carry."""
    kept = torch.zeros(4, 2, 2, 11, 11, dtype=torch.float64)
    kept[:, 0, 1, 7, 0] = 0.5  # the same in every class: not selective
    for c in addition_carry.CARRY_FLAGS["units"]:
        kept[c, 1, 0, 8, 1] = 1.0
    kept[0, 1, 0, 8, 1] = 0.1
    return addition_carry.ClassMeans(weight=kept.clone(), kept=kept, count=torch.tensor([10.0, 10.0, 10.0, 10.0]))


def _pair(problems=40, kept_fraction=0.1, exact_match=0.5):
    model = tiny_gpt2(vocab=addition.VOCAB_SIZE).eval()
    test = {k: v[:problems] for k, v in addition.addition_data("test").items()}
    exact = {"all": exact_match, "n_all": problems, **{c: 0.5 for c in addition.CARRY_CLASSES},
             **{f"n_{c}": 10 for c in addition.CARRY_CLASSES}}
    edges = SimpleNamespace(kept_fraction=kept_fraction, kept_per_query=1.5, per_layer=[0.1, 0.1],
                            kept_per_query_per_layer=[1.0, 2.0])
    run = SimpleNamespace(tau=0.2, recipe=SimpleNamespace(steps=5))
    dense = SimpleNamespace(name="addition-4l", model=model, data={"test": test}, info={"heldout_split": "test"})
    sparse = SimpleNamespace(**{**vars(dense), "model": sparsify(copy.deepcopy(model), gate_bias=0.0).eval(),
                                "run": run})
    return ModelPair("addition-4l", dense, sparse, SimpleNamespace(ce=1.0, exact_match=exact),
                     SimpleNamespace(ce=1.1, exact_match=exact, edges=edges))


def test_attention_by_class_matches_manual_means():
    model = tiny_gpt2().eval()
    ids = torch.randint(0, 50, (7, 11))
    classes = torch.tensor([0, 1, 0, 2, 1, 1, 0])
    means = attention_by_class(model, ids, classes, n_classes=4, batch_size=3)
    maps = attention_maps(model, ids).double()
    for c in range(3):
        assert torch.allclose(means.weight[c], maps[classes == c].mean(0), atol=1e-6)
    assert means.count.tolist() == [3, 3, 1, 0]
    causal = torch.ones(11, 11).tril().bool()
    assert (means.kept[:3][..., causal] == 1).all(), "a dense model uses every causal edge"
    assert torch.allclose(means.pooled([0, 2], "weight"), maps[(classes == 0) | (classes == 2)].mean(0), atol=1e-6)
    assert torch.isnan(means.pooled([3])).all()
    with pytest.raises(ValueError, match="classes"):
        attention_by_class(model, ids, torch.tensor([0, 1, 0, 5, 1, 1, 0]), n_classes=4)
    with pytest.raises(ValueError, match="measure"):
        means.pooled([0], "mean")


def test_carry_selectivity_finds_the_planted_edge():
    frame = addition_carry.carry_selectivity(_planted_means())
    top = frame.iloc[0]
    assert (top["carry"], top["layer"], top["head"], top["query"], top["key"]) == ("units", 1, 0, 8, 1)
    assert top["with_carry"] == pytest.approx(1.0) and top["without_carry"] == pytest.approx(0.05)
    assert bool(top["relevant"])
    flat = frame[(frame["layer"] == 0) & (frame["head"] == 1) & (frame["query"] == 7) & (frame["key"] == 0)]
    assert np.allclose(flat["selectivity"], 0.0)
    assert len(frame) == 2 * 2 * 2 * len(addition_carry.ANSWER_QUERIES) * len(addition_carry.OPERAND_KEYS)
    named = addition_carry.with_position_names(frame).iloc[0]
    assert (named["query_token"], named["predicts"], named["key_token"]) == ("s2", "s1", "a0")


def test_carry_study_names_the_carry_selective_head():
    carry = addition_carry.carry_study({"dense": _planted_means(), "sparse": _planted_means()})
    assert (carry.best.layer, carry.best.head, carry.best.query, carry.best.key) == (1, 0, 8, 1)
    assert carry.best.reads == "a1.h0 s2→a0" and carry.selective
    assert "most carry-selective head is a1.h0" in carry.sentence and "a1.h0 s2→a0 (units carry)" in carry.sentence
    assert list(carry.per_class.index) == list(addition.CARRY_CLASSES)
    assert carry.per_class["sparse_kept"].tolist() == pytest.approx([0.1, 1.0, 0.0, 1.0])
    metrics = json.loads(json.dumps(carry.to_metrics()))
    assert metrics["most_selective_sparse"]["layer"] == 1 and set(metrics["most_selective_sparse_by_carry"]) == {
        "units", "tens"}
    units = carry.selectivity_map("sparse_kept", "units")
    assert list(units.columns) == ["a1", "a0", "b1", "b0"]
    assert len(units) == len(addition_carry.ANSWER_QUERIES)
    assert units.loc["s2 → s1", "a0"] == pytest.approx(0.95) and units.drop(index="s2 → s1").abs().max().max() < 1e-9
    assert carry.selectivity_map("sparse_kept", "tens").abs().max().max() < 0.95


def test_top_reads_ranks_keys():
    reads = addition_reads.top_reads(_planted_means(), layer=1, measure="kept", k=1)
    row = reads[(reads["head"] == 0) & (reads["query"] == 8)].iloc[0]
    assert row["key_1"] == "a0" and row["value_1"] == pytest.approx(0.525) and row["predicts"] == "s1"
    assert row["total_kept"] == pytest.approx((1.0 + 0.1 + 1.0 + 0.0) / 4)


def test_parse_problem():
    assert study.parse_problem("53+21") == (53, 21)
    assert study.parse_problem(" 7+99") == (7, 99)
    for bad in ("53-21", "100+1", "a+b", "1+2+3"):
        with pytest.raises(ValueError, match="^examples:"):
            study.parse_problem(bad)


def test_toy_accuracy_reads_the_cached_metrics():
    accuracy = study.toy_accuracy(_pair())
    assert accuracy.kept_per_query_per_layer == [1.0, 2.0] and accuracy.sparse_steps == 5
    assert list(accuracy.table().columns) == ["problems", "dense_exact_match", "sparse_exact_match"]
    assert accuracy.kept_fraction == 0.1 and accuracy.tau == 0.2
    json.dumps(asdict(accuracy))


def test_example_graphs_count_what_the_figure_draws_and_the_layer_reads():
    pair = _pair()
    graphs = study.example_graphs(pair, ["53+21", "43+59"], min_weight=0.02)
    assert graphs.dense.shape == (2, 2, 4, 11, 11) and graphs.carries == ["none", "both"]
    drawn = graphs.edges_drawn()
    assert drawn["dense"].tolist() == [int((graphs.dense[p].tril() >= 0.02).sum()) for p in range(2)]
    assert (drawn["sparse"] <= drawn["dense"]).all() and list(drawn["problem"]) == ["53+21=00074", "43+59=00102"]
    reads = addition_reads.layer_reads(addition_carry.class_means(pair, batch_size=16))
    assert reads.dense_weight.shape == (4, 11, 11)
    assert len(reads.side_by_side()) == 4 * len(addition_carry.ANSWER_QUERIES)
    assert reads.sentence.startswith("In layer 0 of the sparse model")


def test_toy_circuit_names_heads_as_layer_head_pairs():
    circuit = study.toy_circuit(_pair(), n_problems=4, n_edges=6, method="eap")
    assert set(circuit.heads) == {"dense", "sparse"}
    assert all(0 <= layer < 2 and 0 <= head < 4 for heads in circuit.heads.values() for layer, head in heads)
    assert len(circuit.top_edges()) == 12
    assert circuit.named("dense") == (", ".join(f"a{layer}.h{head}" for layer, head in circuit.heads["dense"])
                                      or "none")


def _seed(seed, kept_fraction, selective=True, exact_match=0.5, matching=False):
    """One planted training seed: the pair's cached metrics, Figure-1 graphs of the random toy, and the planted
    carry-selective edge (or, with ``selective`` False, none); ``matching`` plants layer 0's matching-digit reads
    (s1 -> a0 for the units digit, s2 -> b1 for the tens digit, in every problem)."""
    pair = _pair(kept_fraction=kept_fraction, exact_match=exact_match)
    means = _planted_means()
    if not selective:
        means = addition_carry.ClassMeans(weight=means.weight, kept=torch.zeros_like(means.kept), count=means.count)
    if matching:
        means.kept[:, 0, 0, 9, 1] = means.kept[:, 0, 1, 8, 3] = 1.0
    return study.AdditionSeed(seed, study.toy_accuracy(pair), study.example_graphs(pair, ["53+21", "43+59"], 0.02),
                              addition_reads.layer_reads({"dense": means, "sparse": means}),
                              addition_carry.carry_study({"dense": means, "sparse": means}), None, 40, 2, 4)


def test_addition_seeds_report_every_seed_and_spreads_over_them():
    runs = Seeds((_seed(0, 0.1), _seed(1, 0.3, selective=False)))
    assert runs.seeds == [0, 1] and runs.first.seed == 0
    metrics = json.loads(json.dumps(study.addition_metrics(runs)))
    spreads = metrics["spreads"]
    assert "dense_circuit_heads" not in spreads and {"selectivity", "kept_per_query_layer0"} <= set(spreads)
    for found in spreads.values():
        assert found["n"] == 2 and found["min"] <= found["mean"] <= found["max"]
    assert spreads["kept_fraction"]["values"] == [0.1, 0.3] and spreads["kept_fraction"]["mean"] == pytest.approx(0.2)
    assert spreads["selectivity"]["values"] == pytest.approx([0.95, 0.0])
    assert spreads["kept_per_query_layer1"]["values"] == [2.0, 2.0]
    carry = study.carry_table(runs)
    assert carry["seed"].tolist() == [0, 1] and carry["selective"].tolist() == [True, False]
    assert carry["head"].tolist()[0] == "a1.h0" and carry["edge"].tolist()[0] == "a1.h0 s2→a0"
    assert metrics["selective_seeds"] == [0]
    matches = study.exact_match_table(runs)
    assert list(matches.columns[:2]) == ["seed", "carry_class"] and len(matches) == 2 * 5
    by_class = study.exact_match_spread(runs)
    assert by_class["n"].tolist() == [2] * 5 and (by_class["sparse_exact_match min"] <= by_class[
        "sparse_exact_match max"]).all()
    assert study.circuit_table(runs) is None and "No circuit" in study.circuit_sentence(runs)
    accuracy = study.accuracy_sentence(runs)
    assert "20.00% (10.00%–30.00% over 2 seeds)" in accuracy
    assert "Kept keys per query by layer, layer 0: 1.00 (1.00–1.00 over 2 seeds); layer 1" in accuracy
    sentence = study.carry_sentence(runs)
    assert "exists in 1 of 2 seeds" in sentence and "seed 0: a1.h0 s2→a0, units carry, 100% vs 5%" in sentence
    assert "seed 1: none" in sentence
    claim = study.addition_claim(runs)
    assert claim.sentence.startswith("over 2 seeds: sparse toy keeps 20.0% (10.0%–30.0% over 2 seeds) of attention "
                                     "edges (keys per query 1.50, 1.50–1.50 over 2 seeds; layer 0: 1.00, 1.00–1.00 "
                                     "over 2 seeds)")
    assert "a carry-selective kept edge in 1 of 2 seeds (by seed 0: a1.h0 s2→a0)" in claim.sentence
    assert "selectivity 0.47 (0.00–0.95 over 2 seeds)" in claim.sentence
    graphs = study.graphs_sentence(runs)
    assert "the 2 problems draw" in graphs and "edges per problem" in graphs
    assert [row["seed"] for row in metrics["per_seed"]] == metrics["seeds"] == [0, 1]
    assert metrics["per_seed"][0]["toy"]["kept_fraction"] == 0.1
    assert metrics["per_seed"][0]["carry"]["most_selective_sparse"]["layer"] == 1


def test_no_selective_seed_is_said_plainly():
    runs = Seeds((_seed(0, 0.1, selective=False), _seed(1, 0.1, selective=False)))
    assert runs.where(lambda run: run.carry.selective) == []
    assert study.carry_sentence(runs).startswith("In none of 2 seeds")
    assert "no kept edge to a carry-deciding digit reaches carry selectivity 0.5 in any of 2 seeds" in \
        study.addition_claim(runs).sentence


def test_addition_claim_reaches_each_verdict_by_its_rule():
    def verdict(*seeds):
        claim = study.addition_claim(Seeds(tuple(_seed(i, 0.1, *found) for i, found in enumerate(seeds))))
        assert claim.id == "addition_circuit" and claim.rule == study.ADDITION_RULE
        assert claim.values["seeds"] == list(range(len(seeds)))
        assert set(claim.values) >= {"selective_seeds", "selectivity", "kept_fraction", "sparse_exact_match"}
        return claim.verdict

    assert verdict((True, 1.0, True), (True, 0.99, True)) == "reproduced"
    assert verdict((True, 1.0, False), (True, 0.99, False)) == "partly", "layer 0 reads no matching digit"
    assert verdict((True, 1.0, True), (False, 1.0, True)) == "partly"
    assert verdict((False, 1.0, True), (False, 1.0, False)) == "partly", "matching digits read, no carry edge"
    assert verdict((True, 1.0, True), (True, 0.98, True)) == "not reproduced", "one seed's exact match under 99 %"
    assert verdict((False, 1.0), (False, 1.0)) == "not reproduced", "no carry-selective edge, no matching read"
    assert "carry-selective edge" in study.ADDITION_RULE and "matching digits" in study.ADDITION_RULE


def test_a_carry_edge_must_clear_the_threshold_from_a_query_that_is_not_the_carry():
    """s2 is the tens carry itself: its edge to a1 is selective by construction and does not count; an edge kept 30
    points more often with the carry is under the 0.5 threshold."""
    kept = torch.zeros(4, 2, 2, 11, 11, dtype=torch.float64)
    for c in addition_carry.CARRY_FLAGS["tens"]:
        kept[c, 1, 0, 8, 0] = 1.0  # s2 -> a1 with a tens carry only
    for c in addition_carry.CARRY_FLAGS["units"]:
        kept[c, 1, 1, 9, 4] = 0.4  # s1 -> b0: 0.4 with a units carry, 0.1 without
    kept[[0, 2], 1, 1, 9, 4] = 0.1
    means = addition_carry.ClassMeans(weight=kept.clone(), kept=kept, count=torch.full((4,), 10.0))
    carry = addition_carry.carry_study({"dense": means, "sparse": means})
    assert carry.best.reads == "a1.h1 s1→b0" and carry.best.selectivity == pytest.approx(0.3)
    assert not carry.selective and "closest, a1.h1 s1→b0" in carry.sentence


def test_addition_seeds_measure_each_loaded_seed_with_its_circuit():
    loaded = []

    def load(seed):
        loaded.append(seed)
        return _pair(kept_fraction=0.1 * (seed + 1))

    settings = study.AdditionSettings(examples=["53+21"], min_weight=0.02, batch_size=16, circuit_problems=4,
                                      circuit_edges=6, circuit_method="eap")
    runs = study.addition_seeds([0, 2], load, settings)
    assert loaded == [0, 2] and runs.per_seed()["kept_fraction"].tolist() == pytest.approx([0.1, 0.3])
    assert runs.spread("sparse_circuit_heads").n == 2 and study.circuit_table(runs)["seed"].tolist() == [0, 2]
    sentence = study.circuit_sentence(runs)
    assert "Over every seed" in sentence and "top 6 component edges" in sentence
    metrics = json.loads(json.dumps(study.addition_metrics(runs)))
    heads = metrics["per_seed"][0]["circuit_heads_in_top_edges"]
    assert heads == {k: [list(h) for h in v] for k, v in runs.first.circuit.heads.items()}
