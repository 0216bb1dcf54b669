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


def _close(a, b) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _check_spread(record, values, label):
    """A recorded Spread (``to_dict``) is the mean, min and max of exactly the per-seed ``values``."""
    assert record["n"] == len(values) == len(record["values"]), f"{label}: one value per seed"
    assert all(_close(a, b) for a, b in zip(record["values"], values)), f"{label}: the per-seed values"
    assert _close(record["mean"], sum(values) / len(values)), f"{label}: mean of the seeds"
    assert _close(record["min"], min(values)) and _close(record["max"], max(values)), f"{label}: min-max"
    assert record["min"] <= record["mean"] + 1e-12 and record["mean"] <= record["max"] + 1e-12, label


def _check_02(metrics, folder, parameters):
    import pandas as pd

    seeds = metrics["seeds"]
    per_seed = pd.DataFrame(metrics["per_seed"])
    assert per_seed["seed"].tolist() == seeds and len(set(seeds)) == len(seeds), "one row per training seed"
    if parameters and "train_seeds" in parameters:
        assert seeds == parameters["train_seeds"], "every training seed of the profile was run"
    for key in ("kept_fraction", "sparse_heldout_ce", "dense_heldout_ce", "beta_max", "beta_collapses",
                "expected_fraction_last", "tau"):
        _check_spread(metrics["spread"][key], per_seed[key].tolist(), key)
    assert all(0 < f <= 1 for f in per_seed["kept_fraction"]) and all(0 < f <= 1 for f in
                                                                     per_seed["expected_fraction_last"])
    assert (per_seed["tau"] > 0).all() and (per_seed["beta_max"] >= per_seed["beta_first"]).all()
    assert (per_seed["beta_first"] > 0).all()
    runs = pd.DataFrame(metrics["tradeoff"])
    assert sorted(set(runs["seed"])) == sorted(seeds), "every seed compared with the fixed penalties"
    betas = None
    for seed, group in runs.groupby("seed", sort=False):
        group = group.reset_index(drop=True)
        assert group["method"].tolist() == ["geco"] + ["fixed"] * (len(group) - 1)
        assert group["ce_ratio_to_geco"][0] == 1.0
        geco = per_seed.set_index("seed").loc[seed]
        assert _close(group["kept_fraction"][0], geco["kept_fraction"]), "each seed's GECO row is that seed's run"
        betas = group["beta"].iloc[1:].tolist() if betas is None else betas
        assert group["beta"].iloc[1:].tolist() == betas, "the same fixed betas on every seed"
    for win in metrics["fixed_beta_wins"]:
        fixed = runs[(runs["method"] == "fixed") & (runs["beta"] == win["beta"])].set_index("seed")
        geco = runs[runs["method"] == "geco"].set_index("seed").loc[fixed.index]
        sparser = fixed["kept_fraction"] < geco["kept_fraction"]
        no_worse = fixed["heldout_ce"] <= geco["heldout_ce"]
        assert win["seeds"] == len(seeds) and win["sparser"] == int(sparser.sum())
        assert win["ce_no_higher"] == int(no_worse.sum()) and win["beats_geco"] == int((sparser & no_worse).sum())
        assert win["beating_seeds"] == [int(s) for s in fixed.index[sparser & no_worse]], \
            "every seed in which a fixed beta beat GECO is named"
    assert [w["beta"] for w in metrics["fixed_beta_wins"]] == betas
    for label, group in runs.groupby("run", sort=False):
        _check_spread(metrics["tradeoff_spread"][label]["kept_fraction"], group["kept_fraction"].tolist(), label)
    if parameters and "fixed_betas" in parameters:
        assert betas == parameters["fixed_betas"]
    if parameters and "steps" in parameters:
        assert metrics["evals"] == -(-parameters["steps"] // parameters["eval_every"])
        assert (per_seed["steps"] == parameters["steps"]).all() and metrics["steps"] == parameters["steps"]
    if folder is None:
        return
    history = pd.read_csv(folder / "geco_history.csv")
    assert history["seed"].drop_duplicates().tolist() == seeds
    for seed, part in history.groupby("seed"):
        assert part["step"].tolist() == list(range(1, len(part) + 1))
        assert (part["phase"] == "geco").sum() == parameters["steps"] == metrics["steps"]
    assert pd.read_csv(folder / "geco_seeds.csv")["seed"].tolist() == seeds
    assert pd.read_csv(folder / "tradeoff.csv")["method"].tolist() == runs["method"].tolist()
    assert {"training_dynamics.png", "tradeoff.png"} <= set(metrics_files(folder))


def _check_03(metrics, folder=None, parameters=None):
    rows_by_model, cards_by_model = metrics["models"], metrics["model_cards"]
    seeds = metrics["train_seeds"]
    assert rows_by_model, "at least one model row"
    assert set(cards_by_model) == set(rows_by_model)
    if parameters and "train_seeds" in parameters:
        assert seeds == parameters["train_seeds"]
    for name, cards in cards_by_model.items():
        for card in cards:
            if card["status"] == "measured":
                assert card["heldout_ce"] > 0 and card["n_params"] > 0
                if parameters and parameters.get("kjv_blocks") and card["text"]:
                    assert card["kjv_ce"] > 0 and 0 < card["kjv_blocks"] <= parameters["kjv_blocks"]
    for name, rows in rows_by_model.items():
        assert rows and all(row["model"] == name and row["status"] in ("measured", "pending") for row in rows)
        statuses = [card["status"] for card in cards_by_model[name]]
        toy = any("seed" in card for card in cards_by_model[name])
        assert statuses == ([row["status"] for row in rows] if toy else [rows[0]["status"]]), \
            f"{name}: a card per training seed for a toy, one card for a downloaded model"
        if rows[0]["status"] == "pending":
            assert len(rows) == 1, "a model pending for its first seed is not tried again"
            assert rows[0]["reason"] and "dense_ce" not in rows[0], "a pending model has a reason and no numbers"
            assert name not in metrics["spread"]
            continue
        if rows[0]["post_trained"] or "seed" in rows[0]:
            assert [row["seed"] for row in rows] == seeds, f"{name}: measured once per training seed"
        else:
            assert len(rows) == 1 and "seed" not in rows[0], f"{name}: a model with no training seed, once"
        for row in rows:
            assert row["dense_ce"] > 0 and row["gated_ce"] > 0
            assert is_fraction(row["gated_kept_fraction"]) and row["gated_kept_per_query"] <= row["context_length"]
            assert math.isclose(row["gated_ce_increase_pct"], 100 * (row["gated_ce"] / row["dense_ce"] - 1),
                                rel_tol=1e-6)
            if row["post_trained"]:
                assert is_fraction(row["sparse_kept_fraction"]) and row["sparse_ce"] > 0
                assert len(row["sparse_per_head"]) == len(row["sparse_per_layer"])
        spread = metrics["spread"][name]
        for key in ("dense_ce", "gated_kept_fraction", "gated_ce_increase_pct") + (
                ("sparse_kept_fraction", "sparse_ce", "sparse_ce_increase_pct", "tau")
                if rows[0]["post_trained"] else ()):
            _check_spread(spread[key], [row[key] for row in rows], f"{name} {key}")
    check = metrics["thread_sensitivity"]
    if parameters and parameters.get("thread_check"):
        assert check["threads"] == parameters["thread_check"] and check["seed"] == seeds[0]
        assert set(check["weights_differ"]) == {"dense", "sparse"} and check["compared"]
        reference = next(row for row in rows_by_model.get("addition-4l", []) if row.get("seed") == seeds[0])
        for item in check["compared"]:
            assert _close(item["change"], item["retrained"] - item["reference"])
            assert item["within seed spread"] == (abs(item["change"]) <= item["seeds range"])
            assert item["seeds"] == len(seeds) and _close(item["seeds range"], item["seeds max"] - item["seeds min"])
            if item["key"] in reference:
                assert _close(item["reference"], reference[item["key"]]), "compared with the same seed's row"
        within = [item["within seed spread"] for item in check["compared"]]
        assert check["within_seed_spread"] == (all(within) if len(seeds) > 1 else None)
    elif parameters is not None and "thread_check" in parameters:
        assert "skipped" in check
    if folder is not None and any(rows[0]["status"] == "measured" for rows in rows_by_model.values()):
        assert {"edges_vs_loss.png", "kept_by_head.png"} <= set(metrics_files(folder))


CHECKS = {"01_gated_attention": _check_01, "02_sparsity_loss_curves": _check_02, "03_edges_and_loss": _check_03}

BROKEN = {
    "01_gated_attention": {"open_gates_max_abs_logit_diff": 0.3, "open_gates_max_abs_attention_diff": 0.0,
                           "gated_max_abs_logit_diff": 1.0, "example_row_sum_min": 0.2, "example_row_sum_max": 1.0,
                           "sampling_max_abs_error": 0.01, "sampling_noise_sd_bound": 0.01,
                           "gated_kept_fraction_by_layer": [0.5], "example_mask_is_threshold": True,
                           "example_kept_is_softmax_times_mask": True, "example_regulariser_is_mean_probability": True},
    # the spread says 2 seeds and a mean above its max, over per-seed rows of seeds 0 and 1
    "02_sparsity_loss_curves": {"seeds": [0, 1], "per_seed": [
        {"seed": 0, "kept_fraction": 0.014, "sparse_heldout_ce": 0.002, "dense_heldout_ce": 0.01, "beta_max": 40.0,
         "beta_collapses": 1, "expected_fraction_last": 0.02, "tau": 0.03, "beta_first": 1e-4, "steps": 20},
        {"seed": 1, "kept_fraction": 0.016, "sparse_heldout_ce": 0.003, "dense_heldout_ce": 0.01, "beta_max": 30.0,
         "beta_collapses": 0, "expected_fraction_last": 0.02, "tau": 0.03, "beta_first": 1e-4, "steps": 20}],
        "spread": {"kept_fraction": {"mean": 0.02, "min": 0.014, "max": 0.016, "n": 2, "values": [0.014, 0.016]}}},
    "03_edges_and_loss": {"train_seeds": [0, 1], "thread_sensitivity": {"skipped": "thread_check is 0"},
                          "models": {"m": [{"model": "m", "status": "measured", "post_trained": False,
                                            "dense_ce": 1.0, "gated_ce": 2.0, "gated_kept_fraction": 0.5,
                                            "gated_kept_per_query": 1.0, "context_length": 8,
                                            "gated_ce_increase_pct": 100.0}]},
                          "model_cards": {"m": [{"model": "m", "status": "measured", "heldout_ce": 1.0,
                                                 "n_params": 10, "text": True}]},
                          # one row but a spread over two seeds
                          "spread": {"m": {"dense_ce": {"mean": 1.0, "min": 1.0, "max": 1.0, "n": 2,
                                                        "values": [1.0, 1.0]}}}},
}
