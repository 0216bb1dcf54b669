"""Notebook checks for chapters 4-6: what ``tests/test_notebooks.py`` asserts about a notebook's recorded results
(after it ran), and broken results each check must reject (``tests/test_notebook_checks.py``)."""

import math

from checks_common import is_fraction
from spartan_core.studies.addition_carry import CARRY_IN_QUERY, CARRY_SELECTIVITY
from spartan_core.studies.addition_reads import MATCHING_DIGITS, MATCHING_READ_SHARE


def _check_heads(found, n_layers_heads):
    """Induction heads are recorded as (layer, head) integer pairs, strongest first, within the model."""
    layers, heads = n_layers_heads
    assert all(len(h) == 2 and all(isinstance(i, int) for i in h) for h in found["heads"])
    assert all(0 <= layer < layers and 0 <= head < heads for layer, head in found["heads"])
    assert 0.0 <= found["max_score"] <= 1.0 and len(found["heads"]) <= found["n_heads"] == layers * heads
    assert (found["max_score"] >= found["threshold"]) == bool(found["heads"])
    assert (found["effective"] == 0.0) == (found["max_score"] <= 0.0) and found["effective"] <= found["n_heads"]
    if "ablation" in found:
        effects = [e for layer in found["ablation"] for e in layer]
        assert len(effects) == found["n_heads"] and all(math.isfinite(e) for e in effects)
        assert found["critical"] == sum(e > found["ablation_nats"] for e in effects)


def _check_seed_spreads(metrics, parameters, required):
    """Chapters 4 and 5: one ``per_seed`` row per training seed (the profile's, in order), and every spread the
    mean, min and max of exactly those rows' values (n = seeds); ``required`` spreads must be there."""
    seeds, rows, spreads = metrics["seeds"], metrics["per_seed"], metrics["spreads"]
    if parameters and "train_seeds" in parameters:
        assert seeds == list(parameters["train_seeds"]), "one row per training seed of the profile"
    assert seeds and len(set(seeds)) == len(seeds) and [row["seed"] for row in rows] == seeds
    assert set(required) <= set(spreads)
    for name, found in spreads.items():
        values = [float(row[name]) for row in rows]
        assert found["n"] == len(seeds) == len(found["values"]), f"{name}: a spread over every seed"
        assert all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in zip(found["values"], values))
        assert math.isclose(found["mean"], sum(values) / len(values), rel_tol=1e-9, abs_tol=1e-12), name
        assert found["min"] == min(values) and found["max"] == max(values), name
        assert found["min"] - 1e-12 <= found["mean"] <= found["max"] + 1e-12, name
    return seeds


def _check_04(metrics, folder=None, parameters=None):
    assert metrics["status"] in ("measured", "pending")
    if metrics["status"] == "pending":
        assert metrics["reason"]
        return
    _check_seed_spreads(metrics, parameters, ("kept_fraction", "dense_max_score", "sparse_max_score",
                                              "dense_induction_heads", "sparse_induction_heads",
                                              "dense_effective_heads", "dense_critical_heads"))
    for row in metrics["per_seed"]:
        text = row["text"]
        shape = (len(text["kept_keys_per_query"]), len(text["kept_keys_per_query"][0]))
        assert all(0.0 <= k <= len(text["tokens"]) for layer in text["kept_keys_per_query"] for k in layer)
        induction = row["induction"]
        for model in ("dense", "sparse"):
            _check_heads(induction[model], shape)
            assert row[f"{model}_induction_heads"] == len(induction[model]["heads"])
            assert row[f"{model}_max_score"] == induction[model]["max_score"]
            assert row[f"{model}_critical_heads"] == induction[model]["critical"], "the probe is ablated head by head"
        assert induction["testable"] == bool(induction["dense"]["heads"]) == row["testable"]
        assert is_fraction(row["kept_fraction"])
    assert metrics["testable_seeds"] == [row["seed"] for row in metrics["per_seed"] if row["testable"]]
    assert ("in any of" in metrics["induction_verdict"]) == (not metrics["testable_seeds"])


def _check_05(metrics, folder=None, parameters=None):
    seeds = _check_seed_spreads(metrics, parameters, ("dense_exact_match", "sparse_exact_match", "kept_fraction",
                                                      "kept_per_query_layer0", "selectivity"))
    for row in metrics["per_seed"]:
        toy = row["toy"]
        assert is_fraction(toy["kept_fraction"]) and len(toy["kept_per_query_per_layer"]) == 4
        assert row["kept_fraction"] == toy["kept_fraction"]
        for kind in ("dense", "sparse"):
            match = toy[f"{kind}_exact_match"]
            assert is_fraction(match["all"]) and match["n_all"] == 2000 and row[f"{kind}_exact_match"] == match["all"]
        best = row["carry"]["most_selective_sparse"]
        assert isinstance(best["layer"], int) and isinstance(best["head"], int)
        assert is_fraction(best["with_carry"]) and is_fraction(best["without_carry"]) and best["relevant"]
        assert math.isclose(best["selectivity"], best["with_carry"] - best["without_carry"], abs_tol=1e-9)
        assert row["selectivity"] == best["selectivity"]
        assert row["selective"] == (best["selectivity"] >= CARRY_SELECTIVITY), "selective means the stated threshold"
        assert best["query"] not in CARRY_IN_QUERY[best["carry"]], "never an edge from the carry's own query"
        shares = [row[f"layer0_reads_{digit}"] for digit in MATCHING_DIGITS]
        assert all(is_fraction(share) for share in shares)
        assert row["reads_matching_digits"] == all(share >= MATCHING_READ_SHARE for share in shares)
        assert row["head"] == f"a{best['layer']}.h{best['head']}", "the selective head is named per seed"
        assert all(drawn["dense"] > 0 for drawn in row["figure1_edges_drawn"])
        for heads in row.get("circuit_heads_in_top_edges", {}).values():
            assert all(len(h) == 2 and all(isinstance(i, int) for i in h) for h in heads)
    assert metrics["selective_seeds"] == [row["seed"] for row in metrics["per_seed"] if row["selective"]]
    for found in metrics["exact_match_by_class"]:
        assert found["n"] == len(seeds)
        for kind in ("dense", "sparse"):
            low, mean, high = (found[f"{kind}_exact_match {stat}"] for stat in ("min", "mean", "max"))
            assert low - 1e-12 <= mean <= high + 1e-12


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
    train, prompts = parameters["train_seeds"], parameters["prompt_seeds"]
    for task in measured:
        assert tasks[task]["train_seeds"] == sorted(train) and tasks[task]["prompt_seeds"] == sorted(prompts)
    draws = metrics["ratios_by_draw"]
    for r in ratios:
        assert r["train_seeds"] == len(train) and r["prompt_sets"] == len(prompts)
        assert r["draws"] == len(train) * len(prompts), "every training seed x prompt set draws one ratio"
        assert 0 < r["ratio_min"] <= r["ratio_mean"] <= r["ratio_max"]
        assert r["ratio_min"] <= r["seed_mean_min"] <= r["seed_mean_max"] <= r["ratio_max"]
        mine = [d for d in draws if (d["task"], d["ablation"], d["kind"]) == (r["task"], r["ablation"], r["kind"])]
        assert {(d["train_seed"], d["prompt_seed"]) for d in mine} == {(t, p) for t in train for p in prompts}
        values = [d["ratio"] for d in mine]
        assert math.isclose(sum(values) / len(values), r["ratio_mean"], rel_tol=1e-9)
        assert (min(values), max(values)) == (r["ratio_min"], r["ratio_max"])
        seed_means = [sum(v) / len(v) for v in ([d["ratio"] for d in mine if d["train_seed"] == t] for t in train)]
        assert math.isclose(min(seed_means), r["seed_mean_min"], rel_tol=1e-9)
        assert math.isclose(max(seed_means), r["seed_mean_max"], rel_tol=1e-9)
    if parameters["check_prompts"] and "addition" in parameters["tasks"]:
        assert metrics["method_agreement_train_seed"] == train[0]
        for model in ("dense", "sparse"):
            assert metrics["method_agreement"]["addition"][model]["eap"] > 0.5, "EAP must rank like exact patching"
    for task in set(metrics.get("method_agreement", {})):
        assert task in parameters["tasks"] and task in ("addition", "induction", "docstring")
    if "docstring" in measured:
        performance = tasks["docstring"]["performance"]
        assert math.isclose(performance["chance"], 1 / 3) and math.isclose(performance["bar"], 2 / 3)
        for model in ("dense", "sparse"):
            accuracy = performance[model]["accuracy"]
            assert accuracy["n"] == len(train) * len(prompts) and is_fraction(accuracy["mean"])
        assert performance["counts"] == (performance["dense"]["accuracy"]["mean"] >= performance["bar"])


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
