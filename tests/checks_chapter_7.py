"""Notebook checks for chapter 7: what ``tests/test_notebooks.py`` asserts about its recorded results (after it
ran), and broken results the check must reject (``tests/test_notebook_checks.py``)."""

import math

from checks_common import is_fraction

WHOLE_NUMBER_POLICIES = ("topk", "window", "sink")


def _number(value) -> float:
    """A recorded float; NaN is stored as the string ``"nan"`` (JSON has none)."""
    return float(value)


def _check_pareto(name, found, parameters):
    points = found["points"]
    learned = [p for p in points if p["stage"] == "learned"]
    assert len(learned) == 1 and learned[0]["kept_per_query"] > 0, f"{name}: one learned-gate point"
    budgets = parameters["addition_budgets"] if name == "addition-4l" else parameters["lm_budgets"]
    for policy in parameters["policies"]:
        mine = [p for p in points if p["policy"] == policy]
        runs = {p["budget"] for p in mine}
        expected = {b for b in budgets if policy not in WHOLE_NUMBER_POLICIES or b == int(b)}
        if policy == "sink":
            expected = {b for b in expected if b >= 1}
        assert runs == expected, f"{name} {policy}: every budget it can keep"
        assert sorted(p["stage"] for p in mine) == sorted(["as is", "fine-tuned"] * len(expected)), \
            f"{name} {policy}: both evaluations of every budget"
        for p in mine:
            assert is_fraction(p["kept_fraction"]) and p["heldout_ce"] > 0
            if policy in WHOLE_NUMBER_POLICIES:
                assert 0 < p["kept_per_query"] <= p["budget"] + 1e-9, f"{name} {policy}: at most k keys per query"
    for row in found["comparison"]:
        curve = [p for p in points if p["policy"] == row["policy"] and p["stage"] == row["stage"]]
        beats = any(p["kept_per_query"] <= learned[0]["kept_per_query"] and p["heldout_ce"] <= learned[0]["heldout_ce"]
                    for p in curve)
        assert row["beats_learned"] == beats, f"{name} {row['policy']}: the verdict follows the points"


def _check_07(metrics, folder=None, parameters=None):
    assert set(metrics["pareto"]) == set(parameters["models"])
    for name, found in metrics["pareto"].items():
        _check_pareto(name, found, parameters)
    runs = metrics["controllers"]
    labels = len(parameters["controllers"]) + len(parameters["fixed_betas"])
    assert len(runs) == labels * len(parameters["controller_seeds"]), "every controller on every seed"
    for run in runs:
        assert 0.0 <= run["evals_over_tau"] <= 1.0
        assert math.isnan(_number(run["end_kept_per_query"])) == (not run["met_tau"]), "an end point only at CE ≤ τ"
        assert (run["controller"] == "fixed") == math.isnan(_number(run["beta_collapses"]))
    feasible = {}
    for row in metrics["controller_summary"]:
        if row["met_tau"] == row["seeds"]:
            feasible[row["label"]] = row["end_kept_per_query"]["mean"]
    assert metrics["best_controller"] == (min(feasible, key=feasible.get) if feasible else None)


CHECKS = {"07_baselines": _check_07}

BROKEN = {
    "07_baselines": {"pareto": {"addition-4l": {
        "points": [{"policy": "window", "stage": "as is", "budget": 1.0, "kept_per_query": 1.5, "kept_fraction": 0.2,
                    "heldout_ce": 1.0},
                   {"policy": "window", "stage": "fine-tuned", "budget": 1.0, "kept_per_query": 1.5,
                    "kept_fraction": 0.2, "heldout_ce": 1.0},
                   {"policy": "SPARTAN gate", "stage": "learned", "budget": None, "kept_per_query": 0.1,
                    "kept_fraction": 0.01, "heldout_ce": 1.0}],
        "comparison": []}}},
}
