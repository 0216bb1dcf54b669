"""Notebook checks for chapters 4-6: what ``tests/test_notebooks.py`` asserts about a notebook's recorded results
(after it ran), and broken results each check must reject (``tests/test_notebook_checks.py``)."""

import math

from checks_common import is_fraction


def _check_heads(found, n_layers_heads):
    """Induction heads are recorded as (layer, head) integer pairs, strongest first, within the model."""
    layers, heads = n_layers_heads
    assert all(len(h) == 2 and all(isinstance(i, int) for i in h) for h in found["heads"])
    assert all(0 <= layer < layers and 0 <= head < heads for layer, head in found["heads"])
    assert 0.0 <= found["max_score"] <= 1.0 and len(found["heads"]) <= found["n_heads"] == layers * heads
    assert (found["max_score"] >= found["threshold"]) == bool(found["heads"])


def _check_04(metrics, folder=None, parameters=None):
    assert metrics["status"] in ("measured", "pending")
    if metrics["status"] == "pending":
        assert metrics["reason"]
        return
    text = metrics["text"]
    shape = (len(text["kept_keys_per_query"]), len(text["kept_keys_per_query"][0]))
    assert all(0.0 <= k <= len(text["tokens"]) for layer in text["kept_keys_per_query"] for k in layer)
    induction = metrics["induction"]
    for model in ("dense", "sparse"):
        _check_heads(induction[model], shape)
    assert induction["testable"] == bool(induction["dense"]["heads"])
    assert ("no induction head" in metrics["induction_verdict"]) == (not induction["testable"])
    assert is_fraction(metrics["kept_fraction"])


def _check_05(metrics, folder=None, parameters=None):
    toy = metrics["toy"]
    assert is_fraction(toy["kept_fraction"]) and len(toy["kept_per_query_per_layer"]) == 4
    for kind in ("dense", "sparse"):
        match = toy[f"{kind}_exact_match"]
        assert is_fraction(match["all"]) and match["n_all"] == 2000
    carry = metrics["carry"]
    best = carry["most_selective_sparse"]
    assert isinstance(best["layer"], int) and isinstance(best["head"], int)
    assert is_fraction(best["with_carry"]) and is_fraction(best["without_carry"]) and best["relevant"]
    assert math.isclose(best["selectivity"], best["with_carry"] - best["without_carry"], abs_tol=1e-9)
    assert all(row["dense"] > 0 for row in metrics["figure1_edges_drawn"])
    for heads in metrics.get("circuit_heads_in_top_edges", {}).values():
        assert all(len(h) == 2 and all(isinstance(i, int) for i in h) for h in heads)


def _check_06(metrics, folder=None, parameters=None):
    tasks = metrics["tasks"]
    assert set(tasks) == set(parameters["tasks"])
    measured = [t for t, info in tasks.items() if info["status"] == "measured"]
    for task, info in tasks.items():
        if info["status"] == "pending":
            assert info["reason"] and task in ("ioi", "greater-than", "induction"), "only hub models may be pending"
    for info in tasks.values():
        for kinds in info.get("needed_at_threshold", {}).values():
            for kind, models in kinds.items():
                for model, count in models.items():
                    assert count >= 1, f"{kind}/{model}: a circuit of no edge cannot explain 90 %"
    ratios = metrics.get("ratios_at_threshold", [])
    assert {(r["task"], r["ablation"], r["kind"]) for r in ratios} == {
        (t, a, k) for t in measured for a in parameters["ablations"] for k in ("edges", "heads")}
    for r in ratios:
        assert 0 < r["ratio_min"] <= r["ratio_mean"] <= r["ratio_max"]
        assert r["prompt_sets"] == len(parameters["seeds"])
    if parameters["check_prompts"] and "addition" in parameters["tasks"]:
        for model in ("dense", "sparse"):
            assert metrics["method_agreement"][model]["eap"] > 0.5, "EAP must rank edges like exact patching"


CHECKS = {"04_attention_patterns": _check_04, "05_addition": _check_05, "06_circuits": _check_06}

BROKEN = {
    "04_attention_patterns": {"status": "pending", "reason": ""},
    "05_addition": {"toy": {"kept_fraction": 0.1, "kept_per_query_per_layer": [1, 1, 1],
                            "dense_exact_match": {}, "sparse_exact_match": {}}},
    "06_circuits": {"tasks": {"addition": {"status": "measured",
                                           "needed_at_threshold": {"resample": {"edges": {"sparse": 0}}}}},
                    "ratios_at_threshold": [{"task": "addition", "ablation": "resample", "kind": kind,
                                             "ratio_min": 1.0, "ratio_mean": 2.0, "ratio_max": 3.0, "prompt_sets": 1}
                                            for kind in ("edges", "heads")]},
}
