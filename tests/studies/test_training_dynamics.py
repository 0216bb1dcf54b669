from dataclasses import asdict

import pandas as pd
import pytest
import torch

from conftest import tiny_gpt2
from spartan_core import zoo
from spartan_core.studies import training_dynamics
from spartan_core.studies.training_dynamics import PenaltyOutcome, Tradeoff, compare_fixed_penalties, geco_run
from spartan_core.training.posttrain import SparseRecipe, post_train
from spartan_core.zoo.loaded import LoadedModel


def _blocks(n=32, t=12, seed=0):
    ids = torch.randint(1, 50, (n, t), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "labels": ids.clone()}


@pytest.fixture
def tiny_zoo(monkeypatch, one_torch_thread):
    """``zoo.load_sparse`` post-training a tiny GPT-2 for real, so the study reads the run's actual fields."""
    calls = []

    def load_sparse(name, recipe, *, dense_overrides=None, progress=True, **_):
        calls.append((name, dict(recipe), dense_overrides))
        resolved = SparseRecipe.from_any({**dict(steps=6, batch_size=8, eval_every=3, eval_batch_size=16), **recipe})
        result = post_train(tiny_gpt2(), _blocks(), _blocks(seed=1), resolved, progress=False)
        info = {"tau": result.tau, "tau_reference": result.tau_reference, "recipe": asdict(resolved),
                "dense_train_ce": result.dense_train_ce, "heldout_split": "validation", "best_step": result.best_step,
                "train_wall_time_s": result.wall_time_s, "metrics": result.metrics}
        return LoadedModel(name=name, model=result.model, tokenizer=None, data={}, info=info,
                           history=result.history, evals=result.evals)

    monkeypatch.setattr(zoo, "load_sparse", load_sparse)
    return calls


def test_geco_run_reads_the_logged_run(tiny_zoo):
    run = geco_run("shakespeare-lm", {"eta": 5.0, "tau_factor": 2.0}, dense_steps=30)
    assert tiny_zoo[0][2] == {"steps": 30}, "a toy gets its pretraining steps"
    metrics = run.metrics()
    assert metrics["steps"] == len(run.history) == 6 and metrics["evals"] == 2
    assert 0 < metrics["kept_fraction"] <= 1 and metrics["beta_max"] >= metrics["beta_first"] > 0
    assert "dense_exact_match" not in metrics
    assert run.dynamics_sentence.startswith("shakespeare-lm, 6 steps: expected edge fraction")
    assert "of attention edges kept" in run.kept_sentence and "exact match" not in run.kept_sentence
    assert list(run.summary().columns) == ["dense", "sparse (GECO)"]


def test_hub_models_get_no_pretraining_overrides(tiny_zoo):
    geco_run("gpt2", {}, dense_steps=30)
    assert tiny_zoo[0][2] == {}


def test_fixed_penalties_hold_beta_and_are_compared_with_geco(tiny_zoo):
    geco = geco_run("addition-4l", {})
    tradeoff = compare_fixed_penalties("addition-4l", {"lr": 1e-3}, [0.5, 2.0], geco)
    assert [call[1] for call in tiny_zoo[1:]] == [{"lr": 1e-3, "eta": 0.0, "beta_init": b} for b in (0.5, 2.0)]
    frame = tradeoff.frame()
    assert frame["method"].tolist() == ["geco", "fixed", "fixed"] and frame["ce_ratio_to_geco"].iloc[0] == 1.0
    assert tradeoff.sentence.count("β = ") == 2
    with pytest.raises(ValueError, match="^betas:"):
        compare_fixed_penalties("addition-4l", {}, [], geco)


@pytest.mark.parametrize("fixed, phrase", [
    (PenaltyOutcome(3.0, 0.0094, 0.05, 0.0066), "kept fewer edges than GECO (0.94% kept), but at 44× GECO's"),
    (PenaltyOutcome(3.0, 0.0094, 0.05, 0.0001), "it beats GECO on both"),
    (PenaltyOutcome(0.3, 0.0246, 0.15, 0.0001), "more edges than GECO (2.46% kept) at a lower held-out CE"),
    (PenaltyOutcome(0.3, 0.0246, 0.15, 0.0066), "GECO is better on both"),
])
def test_the_sentence_says_for_each_fixed_beta_whether_it_beat_geco(fixed, phrase):
    tradeoff = Tradeoff(geco=PenaltyOutcome(None, 0.0139, 0.08, 0.00015), fixed=[fixed])
    assert phrase in tradeoff.sentence
    assert tradeoff.sentence.startswith("GECO kept 1.39% of the edges")
    assert tradeoff.beats_geco() == ([3.0] if "beats GECO" in phrase else [])


def test_collapses_count_returns_to_the_lower_clamp():
    history = pd.DataFrame({"phase": "geco", "log_beta": [-10, -5, -10, -10, -3, -10], "beta": 1.0,
                            "beta_used": 1.0, "expected_fraction": 0.5})
    run = training_dynamics.GecoRun(model="m", history=history, evals=pd.DataFrame({"eval_ce": [0.1, 0.3]}),
                                    tau=0.2, tau_reference="dense", beta_min=2.718281828459045 ** -10,
                                    dense_train_ce=0.1, dense_heldout_ce=0.1, heldout_split="test", best_step=None,
                                    train_wall_time_s=1.0, outcome=PenaltyOutcome(None, 0.1, 1.0, 0.1))
    assert run.beta_collapses == 2 and run.evals_meeting_tau == 1


def test_displayed_table_labels_each_run():
    tradeoff = Tradeoff(geco=PenaltyOutcome(None, 0.02, 0.1, 0.01), fixed=[PenaltyOutcome(3.0, 0.01, 0.05, 0.02)])
    table = tradeoff.table()
    assert table.index.tolist() == ["GECO", "fixed β = 3"] and table["CE ÷ GECO's"].tolist() == [1.0, 2.0]
