"""Notebook checks for chapters 1-3: what ``tests/test_notebooks.py`` asserts about a notebook's recorded results
(after it ran), and broken results each check must reject (``tests/test_notebook_checks.py``)."""

import math

from checks_common import is_fraction, metrics_files


def _check_01(metrics, folder, parameters):
    assert metrics["open_gates_max_abs_logit_diff"] < 1e-5, "open gates must reproduce dense logits"
    assert metrics["open_gates_max_abs_attention_diff"] < 1e-5
    assert metrics["gated_max_abs_logit_diff"] > 0, "closed gates must change the model"
    assert 0 <= metrics["example_row_sum_min"] <= metrics["example_row_sum_max"] <= 1 + 1e-6
    assert metrics["sampling_max_abs_error"] < 6 * metrics["sampling_noise_sd_bound"]
    assert all(0 < f < 1 for f in metrics["gated_kept_fraction_by_layer"])
    assert metrics["example_mask_is_threshold"] and metrics["example_kept_is_softmax_times_mask"]
    assert metrics["example_regulariser_is_mean_probability"]


def _check_02(metrics, folder, parameters):
    import pandas as pd

    assert 0 < metrics["kept_fraction"] <= 1 and 0 < metrics["expected_fraction_last"] <= 1
    assert metrics["tau"] > 0 and metrics["beta_max"] >= metrics["beta_first"] > 0
    runs = pd.DataFrame(metrics["tradeoff"])
    assert runs["method"].tolist() == ["geco"] + ["fixed"] * (len(runs) - 1) and runs["ce_ratio_to_geco"][0] == 1.0
    sparser = runs["kept_fraction"] < runs["kept_fraction"][0]
    no_worse = runs["heldout_ce"] <= runs["heldout_ce"][0]
    assert metrics["fixed_betas_beating_geco"] == runs["beta"][sparser & no_worse].tolist(), \
        "every fixed beta that beat GECO is named"
    assert metrics["evals"] == -(-parameters["steps"] // parameters["eval_every"])
    assert runs["beta"].iloc[1:].tolist() == parameters["fixed_betas"]
    history = pd.read_csv(folder / "geco_history.csv")
    assert history["step"].tolist() == list(range(1, len(history) + 1))
    assert (history["phase"] == "geco").sum() == parameters["steps"] == metrics["steps"]
    assert pd.read_csv(folder / "tradeoff.csv")["method"].tolist() == runs["method"].tolist()
    assert {"training_dynamics.png", "tradeoff.png"} <= set(metrics_files(folder))


def _check_03(metrics, folder=None, parameters=None):
    rows = metrics["models"]
    assert rows, "at least one model row"
    assert set(metrics["model_cards"]) == set(rows)
    for name, card in metrics["model_cards"].items():
        assert card["status"] == rows[name]["status"]
        if card["status"] == "measured":
            assert card["heldout_ce"] > 0 and card["n_params"] > 0
            if parameters and parameters.get("kjv_blocks") and card["text"]:
                assert card["kjv_ce"] > 0 and 0 < card["kjv_blocks"] <= parameters["kjv_blocks"]
    for name, row in rows.items():
        assert row["model"] == name and row["status"] in ("measured", "pending")
        if row["status"] == "pending":
            assert row["reason"] and "dense_ce" not in row, "a pending model has a reason and no numbers"
            continue
        assert row["dense_ce"] > 0 and row["gated_ce"] > 0
        assert is_fraction(row["gated_kept_fraction"]) and row["gated_kept_per_query"] <= row["context_length"]
        assert math.isclose(row["gated_ce_increase_pct"], 100 * (row["gated_ce"] / row["dense_ce"] - 1), rel_tol=1e-6)
        if row["post_trained"]:
            assert is_fraction(row["sparse_kept_fraction"]) and row["sparse_ce"] > 0
            assert len(row["sparse_per_head"]) == len(row["sparse_per_layer"])


CHECKS = {"01_gated_attention": _check_01, "02_sparsity_loss_curves": _check_02, "03_edges_and_loss": _check_03}

BROKEN = {
    "01_gated_attention": {"open_gates_max_abs_logit_diff": 0.3, "open_gates_max_abs_attention_diff": 0.0,
                           "gated_max_abs_logit_diff": 1.0, "example_row_sum_min": 0.2, "example_row_sum_max": 1.0,
                           "sampling_max_abs_error": 0.01, "sampling_noise_sd_bound": 0.01,
                           "gated_kept_fraction_by_layer": [0.5], "example_mask_is_threshold": True,
                           "example_kept_is_softmax_times_mask": True, "example_regulariser_is_mean_probability": True},
    "02_sparsity_loss_curves": {"kept_fraction": 0.0139, "expected_fraction_last": 0.014, "tau": 0.03,
                                "beta_first": 1e-4, "beta_max": 100.0, "fixed_betas_beating_geco": [],
                                "tradeoff": [{"method": "geco", "beta": None, "kept_fraction": 0.0139,
                                              "heldout_ce": 0.0066, "ce_ratio_to_geco": 1.0},
                                             {"method": "fixed", "beta": 3.0, "kept_fraction": 0.0094,
                                              "heldout_ce": 0.0001, "ce_ratio_to_geco": 0.015}]},
    "03_edges_and_loss": {"models": {"m": {"model": "m", "status": "measured", "post_trained": False,
                                           "dense_ce": 1.0, "gated_ce": 2.0, "gated_kept_fraction": 1.5,
                                           "gated_kept_per_query": 1.0, "context_length": 8,
                                           "gated_ce_increase_pct": 100.0}},
                          "model_cards": {"m": {"model": "m", "status": "measured", "heldout_ce": 1.0,
                                                "n_params": 10, "text": True}}},
}
