"""Notebook checks for chapters 4-6: what ``tests/test_notebooks.py`` asserts about a notebook's recorded results
(after it ran), and broken results each check must reject (``tests/test_notebook_checks.py``)."""

import math

from checks_common import is_fraction, metrics_files


def _check_04(metrics, folder=None, parameters=None):
    assert metrics["status"] in ("measured", "pending")
    if metrics["status"] == "pending":
        assert metrics["reason"]
        return
    assert 0.0 <= metrics["induction_sparse_max"] <= 1.0 and 0.0 <= metrics["induction_dense_max"] <= 1.0
    assert len(metrics["induction_dense_heads"]) <= metrics["heads_total"]
    assert (len(metrics["induction_dense_heads"]) == 0) == ("no induction head" in metrics["induction_verdict"])
    kept = [k for layer in metrics["text_kept_keys_per_query"] for k in layer]
    assert all(0.0 <= k <= len(metrics["text_tokens_shown"]) for k in kept)
    assert is_fraction(metrics["kept_fraction"])


def _check_05(metrics, folder=None, parameters=None):
    assert is_fraction(metrics["kept_fraction"]) and len(metrics["kept_per_query_per_layer"]) == 4
    for kind in ("dense", "sparse"):
        match = metrics[f"{kind}_exact_match"]
        assert is_fraction(match["all"]) and match["n_all"] == 2000
    best = metrics["most_selective_sparse"]
    assert is_fraction(best["with_carry"]) and is_fraction(best["without_carry"]) and best["relevant"]
    assert math.isclose(best["selectivity"], best["with_carry"] - best["without_carry"], abs_tol=1e-9)
    assert all(row["dense"] > 0 for row in metrics["figure1_edges_drawn"])


def _check_06(metrics, folder=None, parameters=None):
    tasks = metrics["tasks"]
    assert set(tasks) == set(parameters["tasks"])
    measured = [t for t, info in tasks.items() if info["status"] == "measured"]
    for task, info in tasks.items():
        if info["status"] == "pending":
            assert info["reason"] and task in ("ioi", "greater-than", "induction"), "only hub models may be pending"
    ratios = metrics.get("ratios_at_90", [])
    assert {(r["task"], r["ablation"], r["kind"]) for r in ratios} == {
        (t, a, k) for t in measured for a in parameters["ablations"] for k in ("edges", "heads")}
    for r in ratios:
        assert r["min"] <= r["dense / sparse (mean)"] <= r["max"] and r["min"] > 0
    for info in tasks.values():
        for key, count in info.get("needed_at_90", {}).items():
            assert count >= 1, f"{key}: a circuit of no edge cannot explain 90 %"
    if parameters["check_prompts"] and "addition" in parameters["tasks"]:
        for model in ("dense", "sparse"):
            assert metrics["method_agreement"][model]["eap"] > 0.5, "EAP must rank edges like exact patching"


CHECKS = {"04_attention_patterns": _check_04, "05_addition": _check_05, "06_circuits": _check_06}

BROKEN = {
    "04_attention_patterns": {"status": "pending", "reason": ""},
    "05_addition": {"kept_fraction": 0.1, "kept_per_query_per_layer": [1, 1, 1],
                    "dense_exact_match": {}, "sparse_exact_match": {}},
    "06_circuits": {"tasks": {"addition": {"status": "measured", "needed_at_90": {"resample/edges/sparse": 0}}},
                    "ratios_at_90": [{"task": "addition", "ablation": "resample", "kind": kind, "min": 1.0,
                                      "dense / sparse (mean)": 2.0, "max": 3.0} for kind in ("edges", "heads")]},
}
