import math
from dataclasses import asdict

import pytest
import torch

from conftest import tiny_gpt2
from spartan_core import zoo
from spartan_core.studies.edges_and_loss import PAPER_KEPT_PERCENT, EdgesStudy, measure_model, measure_models
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

    def load_sparse(name, recipe, *, dense_overrides=None, progress=True, cache_dir=None):
        resolved = SparseRecipe.from_any({"steps": 4, "batch_size": 4, "eval_every": 2, "eval_batch_size": 8,
                                          "block_size": 12, **recipe})
        result = post_train(tiny_gpt2(), _blocks(), _blocks(seed=1), resolved, progress=False)
        info = {"heldout_split": "validation", "recipe": asdict(resolved), "metrics": result.metrics}
        return LoadedModel(name=name, model=result.model, tokenizer=None, data={}, info=info)

    monkeypatch.setattr(zoo, "load", load)
    monkeypatch.setattr(zoo, "load_sparse", load_sparse)


def test_untrained_gate_row_and_card(tiny_zoo):
    card, row = measure_model("tiny-test", post_train=False, eval_blocks=4, gate_bias=0.0, batch_size=4)
    assert card.status == row.status == "measured" and card.heldout_ce > 0 and card.n_params > 0
    assert card.kjv_ce is None and "M parameters" in card.sentence
    record = row.to_record()
    assert record["context_length"] == 12 and 0 < record["gated_kept_fraction"] < 1
    assert math.isclose(record["gated_ce_increase_pct"], 100 * (row.gated_ce / row.dense_ce - 1))
    assert "sparse_ce" not in record and "untrained gate only" in row.sentence


def test_post_trained_row_reads_the_sparse_run(tiny_zoo):
    _, row = measure_model("tiny-test", post_train=True, recipe={"lr": 1e-3})
    record = row.to_record()
    assert record["post_trained"] and 0 < record["sparse_kept_fraction"] <= 1
    assert len(record["sparse_per_head"]) == len(record["sparse_per_layer"]) == 2
    assert row.heldout == "Shakespeare validation plays, blocks of 12" and row.context_length == 12
    assert "% of edges kept" in row.sentence


def test_a_model_that_cannot_load_is_pending_without_numbers():
    card, row = measure_model("no-such-org/no-such-model-xyz", post_train=True)
    assert card.status == row.status == "pending" and row.reason
    assert "dense_ce" not in row.to_record() and "heldout_ce" not in card.to_record()
    assert row.sentence.startswith("no-such-org/no-such-model-xyz: pending")


def test_study_tables_and_sentences(tiny_zoo):
    study = measure_models(["a", "b"], ["a"], eval_blocks=2)
    assert list(study.table().index) == ["a", "b"] and "sparse: kept %" in study.table()
    assert list(study.per_layer_percent().columns) == ["a", "b"]
    assert study.card_table().index.tolist() == ["a", "b"]
    assert study.sentence.count(";") == 1
    low = min(PAPER_KEPT_PERCENT.values())
    assert f"The paper reports {low:g}" in study.paper_sentence and "a keeps" in study.paper_sentence
    assert list(EdgesStudy.paper_table()["kept %"]) == list(PAPER_KEPT_PERCENT.values())
    assert "No model was post-trained" in EdgesStudy(rows=study.rows[1:]).paper_sentence
    panels = study.head_panels()
    assert [sparse for _, _, sparse in panels] == [True, False] and panels[0][0].shape == (2, 4)
    assert len(study.records()) == 2 and study.cards_sentence.count("held-out CE") == 2
    with pytest.raises(ValueError, match="^post_train:"):
        measure_models(["a"], ["b"])
