import math
from dataclasses import asdict

import pytest
import torch

from conftest import tiny_gpt2
from spartan_core import zoo
from spartan_core.mechanism.token_edges import EdgeCounts
from spartan_core.studies import edges_and_loss as study
from spartan_core.studies.edges_and_loss import (PAPER_KEPT_PERCENT, EdgesAndLoss, EdgesStudy, measure_model,
                                                measure_models)
from spartan_core.studies.model_cards import EdgeSettings, card_table, cards_sentence
from spartan_core.claims import VERDICTS
from spartan_core.studies.seeds import Seeds, spread
from spartan_core.studies.thread_sensitivity import ThreadCheck, thread_check
from spartan_core.training.evaluate import HeldOut
from spartan_core.training.posttrain import SparseRecipe, post_train
from spartan_core.zoo.loaded import LoadedModel


def _blocks(n=8, t=12, seed=0):
    ids = torch.randint(1, 50, (n, t), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "labels": ids.clone()}


@pytest.fixture
def tiny_zoo(monkeypatch, one_torch_thread):
    """A registry-less model name whose dense and sparse copies are tiny GPT-2s (the sparse one trained for real)."""
    def load(name, *, progress=True, cache_dir=None, **overrides):
        assert overrides == {}, "a hub-like name gets no pretraining overrides"
        return LoadedModel(name=name, model=tiny_gpt2().eval(), tokenizer=None, data={"validation": _blocks()},
                           info={"heldout_split": "validation", "source": "test"})

    def load_sparse(name, recipe, *, dense_overrides=None, progress=True, cache_dir=None, weights=True):
        resolved = SparseRecipe.from_any({"steps": 4, "batch_size": 4, "eval_every": 2, "eval_batch_size": 8,
                                          "block_size": 12, **recipe})
        result = post_train(tiny_gpt2(), _blocks(), _blocks(seed=1), resolved, progress=False)
        info = {"heldout_split": "validation", "recipe": asdict(resolved), "metrics": result.metrics}
        return LoadedModel(name=name, model=result.model, tokenizer=None, data={}, info=info, run=result)

    monkeypatch.setattr(zoo, "load", load)
    monkeypatch.setattr(zoo, "load_sparse", load_sparse)


def test_untrained_gate_row_and_card(tiny_zoo):
    card, row = measure_model("tiny-test", post_train=False, settings=EdgeSettings(eval_blocks=4, batch_size=4))
    assert card.status == row.status == "measured" and card.heldout_ce > 0 and card.n_params > 0
    assert card.kjv_ce is None and "M parameters" in cards_sentence([card])
    record = row.to_record()
    assert record["context_length"] == 12 and 0 < record["gated_kept_fraction"] < 1
    assert math.isclose(record["gated_ce_increase_pct"], 100 * (row.gated.ce / row.dense.ce - 1))
    one = EdgesStudy(seeds=[0], cards=(card,), rows={"tiny-test": Seeds((row,))})
    assert "sparse_ce" not in record and "untrained gate only" in study.edges_sentence(one)


def test_post_trained_row_reads_the_sparse_run(tiny_zoo):
    _, row = measure_model("tiny-test", post_train=True, settings=EdgeSettings(recipe={"lr": 1e-3}))
    record = row.to_record()
    assert record["post_trained"] and 0 < record["sparse_kept_fraction"] <= 1
    assert len(record["sparse_per_head"]) == len(record["sparse_per_layer"]) == 2
    assert row.heldout == "Shakespeare validation plays, blocks of 12" and row.context_length == 12
    one = EdgesStudy(seeds=[0], cards=(), rows={"tiny-test": Seeds((row,))})
    assert "of edges kept" in study.edges_sentence(one)


def test_a_model_that_cannot_load_is_pending_without_numbers():
    card, row = measure_model("no-such-org/no-such-model-xyz", post_train=True)
    assert card.status == row.status == "pending" and row.reason
    assert "dense_ce" not in row.to_record() and "heldout_ce" not in card.to_record()
    pending = EdgesStudy(seeds=[0], cards=(card,), rows={row.model: Seeds((row,))})
    assert study.edges_sentence(pending).startswith("no-such-org/no-such-model-xyz: pending")
    assert cards_sentence([card]).startswith("no-such-org/no-such-model-xyz is pending: ")


def test_study_tables_and_sentences(tiny_zoo):
    models = measure_models(["a", "b"], ["a"], settings=EdgeSettings(eval_blocks=2))
    assert list(study.edges_table(models).index) == ["a", "b"] and "sparse: kept %" in study.edges_table(models)
    assert list(study.per_layer_percent(models).columns) == ["a", "b"]
    assert card_table(models.cards).index.tolist() == ["a", "b"]
    assert study.edges_sentence(models).count(";") == 1
    low = min(PAPER_KEPT_PERCENT.values())
    assert f"The paper reports {low:g}" in study.paper_sentence(models) and "a keeps" in study.paper_sentence(models)
    assert list(study.paper_table()["kept %"]) == list(PAPER_KEPT_PERCENT.values())
    untrained = EdgesStudy(seeds=models.seeds, cards=models.cards[1:], rows={"b": models.rows["b"]})
    assert "No model was post-trained" in study.paper_sentence(untrained)
    panels = study.head_panels(models)
    assert [sparse for _, _, sparse in panels] == [True, False] and panels[0][0].shape == (2, 4)
    assert len(study.records(models)) == 2 and cards_sentence(models.cards).count("held-out CE") == 2
    with pytest.raises(ValueError, match="^post_train:"):
        measure_models(["a"], ["b"])


@pytest.fixture
def toy_zoo(monkeypatch, one_torch_thread):
    """The addition toy's name with tiny GPT-2s standing in: every (seed, threads) gives another model (its own
    data, its own post-training run and weight hash); the calls are recorded."""
    calls = []

    def info_of(recipe, overrides):
        seed, threads = overrides.get("seed", 0), overrides.get("threads", 2)
        return {"heldout_split": "validation", "weights_sha256": {"model.safetensors": f"{seed}-{threads}"},
                "trained_on": {"threads": threads}, "seed": seed}

    def load(name, *, progress=True, cache_dir=None, **overrides):
        calls.append(("load", name, overrides))
        torch.manual_seed(overrides.get("seed", 0))
        return LoadedModel(name=name, model=tiny_gpt2().eval(), tokenizer=None,
                           data={"validation": _blocks(seed=overrides.get("seed", 0))}, info=info_of({}, overrides))

    def load_sparse(name, recipe, *, dense_overrides=None, progress=True, cache_dir=None, weights=True):
        calls.append(("load_sparse", name, dict(recipe), dict(dense_overrides or {})))
        resolved = SparseRecipe.from_any({"steps": 4, "batch_size": 4, "eval_every": 2, "eval_batch_size": 8,
                                          "block_size": 12, **{k: v for k, v in recipe.items() if k != "threads"}})
        torch.manual_seed(100 + resolved.seed + 10 * recipe.get("threads", 2))
        result = post_train(tiny_gpt2(), _blocks(seed=resolved.seed), _blocks(seed=1), resolved, progress=False)
        sparse_info = info_of(recipe, {"seed": resolved.seed, "threads": recipe.get("threads", 2)})
        sparse_info["weights_sha256"] = {"model.safetensors": f"sparse-{resolved.seed}-{recipe.get('threads', 2)}"}
        info = {**sparse_info, "recipe": asdict(resolved), "metrics": result.metrics, "tau": result.tau}
        return LoadedModel(name=name, model=result.model, tokenizer=None, data={}, info=info, run=result)

    monkeypatch.setattr(zoo, "load", load)
    monkeypatch.setattr(zoo, "load_sparse", load_sparse)
    return calls


def test_post_trained_models_are_measured_per_training_seed(toy_zoo):
    models = measure_models(["addition-4l", "tiny-hub"], ["addition-4l"], seeds=[0, 1],
                            settings=EdgeSettings(eval_blocks=2))
    rows = [row for seeds in models.rows.values() for row in seeds.runs]
    assert [(row.model, row.seed) for row in rows] == [("addition-4l", 0), ("addition-4l", 1), ("tiny-hub", None)]
    sparse_calls = [call for call in toy_zoo if call[0] == "load_sparse"]
    assert [call[2:] for call in sparse_calls] == [
        ({"seed": 0}, {"seed": 0}), ({"seed": 0, "policy": "dense"}, {"seed": 0}),
        ({"seed": 1}, {"seed": 1}), ({"seed": 1, "policy": "dense"}, {"seed": 1})], \
        "the same models as the ones trained ahead: recipe {'seed': s}, its control, dense overrides {'seed': s}"
    assert ("load", "tiny-hub", {}) in toy_zoo, "a model not trained here is loaded once, with no seed"
    spreads = {model: seeds.spreads(study.ROW_NUMBERS) for model, seeds in models.measured.items()}
    kept = spreads["addition-4l"]["sparse_kept_fraction"]
    assert kept.n == 2 and kept.low <= kept.mean <= kept.high and list(kept.values) == \
        [row.sparse.kept_fraction for row in rows[:2]]
    assert spreads["tiny-hub"]["gated_kept_fraction"].n == 1 and "sparse_ce" not in spreads["tiny-hub"]
    record = study.spread_record(models)["addition-4l"]["dense_ce"]
    assert record["n"] == 2 and record["min"] <= record["mean"] <= record["max"]
    assert study.records(models)["seed"].tolist()[:2] == [0, 1] and len(study.records(models)) == 3
    numeric = study.seed_spread_table(models)
    assert numeric.loc["addition-4l", "n"] == 2 and numeric.loc["tiny-hub", "n"] == 1
    assert numeric.loc["addition-4l", "sparse_kept_fraction min"] <= numeric.loc["addition-4l",
                                                                                "sparse_kept_fraction max"]
    table = study.edges_table(models)
    assert rows[0].to_record()["tau"] == rows[0].tau > 0, "τ recorded for every post-trained model"
    assert table.loc["addition-4l", "τ (training CE)"] != table.loc["tiny-hub", "τ (training CE)"]
    assert table.loc["addition-4l", "training seeds"] == "2" and "not trained here" in table.loc["tiny-hub",
                                                                                               "training seeds"]
    sentence = study.edges_sentence(models)
    assert "over 2 seeds" in sentence and "no training seed" in sentence
    assert "measured once per training seed (2 seeds: 0, 1)" in study.seeds_sentence(models)
    assert "tiny-hub is not trained here" in study.seeds_sentence(models)
    assert card_table(models.cards)["training seed"].tolist()[:2] == [0, 1]
    panels = study.head_panels(models)
    assert [p[2] for p in panels] == [True, False] and "mean of 2 seeds" in panels[0][1]
    assert list(study.per_layer_percent(models).columns) == ["addition-4l", "tiny-hub"]
    assert "2 training seeds" in cards_sentence(models.cards)
    assert "Both seeds of addition-4l's sparse model keep" in study.spread_sentence(models)
    assert "vs its compute-matched control" in sentence and rows[0].row()["control_ce"] == rows[0].control.ce
    claim = study.edges_kept_claim(models)
    assert claim.id == "edges_kept" and claim.verdict in VERDICTS and list(claim.values["post_trained"]) == \
        ["addition-4l"], "judged on every post-trained model, against its control"
    assert claim.sentence == sentence and claim.values["measured"] == ["addition-4l", "tiny-hub"]
    assert claim.values["train_seeds"] == [0, 1] and claim.values["spread"] == study.spread_record(models)


def test_thread_check_retrains_one_seed_and_compares_with_the_seed_spread(toy_zoo):
    models = measure_models(["addition-4l"], ["addition-4l"], seeds=[0, 1], settings=EdgeSettings(eval_blocks=2))
    check = thread_check(models, "addition-4l", 1, settings=EdgeSettings(eval_blocks=2))
    assert toy_zoo[-1][0] == "load" and toy_zoo[-2][2:] == ({"seed": 0, "threads": 1}, {"seed": 0, "threads": 1}), \
        "the thread check asks for the model trained ahead: threads 1 in recipe and dense overrides"
    assert check.seed == 0 and check.threads == 1 and check.reference.threads == 2
    assert check.reference is models.rows["addition-4l"].runs[0]
    assert check.weights_differ == {"dense": True, "sparse": True}
    compared = check.compared()
    assert "sparse kept edges" in compared.index and (compared["seeds"] == 2).all()
    assert compared.loc["sparse kept edges", "seeds range"] == pytest.approx(
        abs(models.rows["addition-4l"].runs[0].sparse.kept_fraction
            - models.rows["addition-4l"].runs[1].sparse.kept_fraction))
    record = check.to_record()
    assert record["within_seed_spread"] == bool(compared["within seed spread"].all())
    assert "instead of 2 threads, training seed 0 of addition-4l is another model" in check.sentence
    assert list(check.table().columns[:2]) == ["seed 0, 2 threads", "seed 0, 1 thread"]


def _row(seed, kept, ce, sha="a", control=None, model="m"):
    edges = EdgeCounts(kept_fraction=kept, per_layer=[kept], per_head=[[kept]], kept_per_query=kept * 5,
                       kept_per_query_per_layer=[kept * 5], by_position=[], fraction_by_position=[], kept=1, possible=1,
                       queries=1)
    return EdgesAndLoss(model=model, status="measured", post_trained=True, seed=seed, context_length=8,
                        dense=HeldOut(1.0), gated=HeldOut(1.1, edges), sparse=HeldOut(ce, edges),
                        control=control, dense_sha256="d" + sha, sparse_sha256="s" + sha, threads=2)


def _study(**models) -> EdgesStudy:
    """Made-up post-trained models: name -> (kept fraction, sparse CE, control CE) over two seeds."""
    rows = {name: Seeds(tuple(_row(seed, kept, ce, control=HeldOut(control), model=name) for seed in (0, 1)))
            for name, (kept, ce, control) in models.items()}
    return EdgesStudy(seeds=[0, 1], cards=(), rows=rows)


@pytest.mark.parametrize("models, verdict", [
    ({"a": (0.2, 4.0, 4.0), "b": (0.3, 1.0, 1.005)}, "reproduced"),  # 1.0 and 1.5 keys per query, loss kept
    ({"a": (0.2, 4.0, 4.0), "b": (0.4, 1.0, 1.0)}, "partly"),  # b keeps 2 keys per query, above the paper's 1.54
    ({"a": (0.2, 4.1, 4.0), "b": (0.2, 1.0, 1.0)}, "partly"),  # a's CE 2.5 % above its control
    ({"a": (0.2, 4.1, 4.0), "b": (0.2, 1.1, 1.0)}, "not reproduced"),  # no model keeps its control's loss
    ({}, "cannot test here"),
])
def test_the_edges_kept_rule_reads_every_post_trained_model_against_its_control(models, verdict):
    claim = study.edges_kept_claim(_study(**models))
    assert claim.verdict == verdict and "compute-matched control" in claim.rule and "1.54 keys per query" in claim.rule
    assert sorted(claim.values["post_trained"]) == sorted(models)


def test_a_ce_change_is_in_nats_and_in_percent_only_against_a_large_enough_ce():
    toy = _row(0, 0.01, 0.002, control=HeldOut(0.001))
    assert toy.row()["sparse_ce_change"] == pytest.approx(0.001) and "sparse_ce_increase_pct" not in toy.row()
    lm = _row(0, 0.01, 4.04, control=HeldOut(4.0))
    assert lm.row()["sparse_ce_increase_pct"] == pytest.approx(1.0)
    sentence = study.edges_sentence(_study(toy=(0.01, 0.002, 0.001)))
    assert "+0.0010 nats (both seeds) vs its compute-matched control" in sentence and "%)" not in sentence


@pytest.mark.parametrize("retrained_kept, within", [(0.021, True), (0.05, False)])
def test_thread_check_says_whether_the_change_is_within_the_seed_spread(retrained_kept, within):
    seeds = {"sparse_kept_fraction": spread([0.02, 0.01, 0.03]), "sparse_ce": spread([1.0, 1.01, 1.02]),
             "dense_ce": spread([1.0, 1.0, 1.0])}
    check = ThreadCheck(model="m", seed=0, threads=1, reference=_row(0, 0.02, 1.0),
                        retrained=_row(0, retrained_kept, 1.005, sha="b"), seeds=seeds)
    assert check.within_seed_spread is within
    if within:
        assert "Every change is within the spread over the 3 training seeds" in check.sentence
    else:
        assert "larger than the spread over the 3 training seeds for sparse kept edges" in check.sentence
    assert "one draw against the range of 3 is no evidence either way" in check.sentence
    same = ThreadCheck(model="m", seed=0, threads=2, reference=_row(0, 0.02, 1.0), retrained=_row(0, 0.02, 1.0),
                       seeds=seeds)
    assert "is the same model" in same.sentence and same.weights_differ == {"dense": False, "sparse": False}
    single = ThreadCheck(model="m", seed=0, threads=1, reference=_row(0, 0.02, 1.0), retrained=_row(0, 0.05, 1.0),
                         seeds={k: spread([0.02]) for k in seeds})
    assert single.within_seed_spread is None and "single training seed" in single.sentence


def test_a_downloaded_model_post_trained_per_seed_has_one_card(toy_zoo):
    models = measure_models(["tiny-hub"], ["tiny-hub"], seeds=[0, 1], settings=EdgeSettings(eval_blocks=2))
    assert models.rows["tiny-hub"].seeds == [0, 1] and len(models.cards) == 1 and models.cards[0].seed is None
    assert [call[2:] for call in toy_zoo if call[0] == "load_sparse"] == [
        ({"seed": 0}, {}), ({"seed": 0, "policy": "dense"}, {}), ({"seed": 1}, {}), ({"seed": 1, "policy": "dense"}, {})], \
        "its post-training is seeded; its dense weights are downloaded, not trained per seed"
    assert models.measured["tiny-hub"].spreads(study.ROW_NUMBERS)["sparse_kept_fraction"].n == 2


def test_a_toys_card_counts_the_tokens_its_pretraining_saw():
    from spartan_core.zoo.loaded import Pretraining

    info = {"metrics": {"heldout_ce": 1.0}, "train_wall_time_s": 2.0,
            "recipe": {"pretrain": {"steps": 10, "batch_size": 4}, "data": {"block_size": 16},
                       "architecture": {"n_positions": 32}}}
    assert Pretraining.from_info(info).tokens == 10 * 4 * 16
    info["recipe"]["data"] = {}
    assert Pretraining.from_info(info).tokens == 10 * 4 * 32, "a toy without a block size trains on its context"
    assert Pretraining.from_info({**info, "recipe": None}).tokens is None
