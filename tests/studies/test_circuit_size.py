"""spartan_core.studies.circuit_size: which model a task runs on, sizes and ratios dense vs sparse over training
seeds x prompt sets, the paper's ranges in one place, and the sentences they give; across tasks (spartan_core.studies.circuit_comparison): the claims and method agreement."""

import copy
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_gpt2
from spartan_core import circuits
from spartan_core.data import addition
from spartan_core.mechanism.sparsify import sparsify
from spartan_core.studies import circuit_comparison
from spartan_core.studies import circuit_size as study
from spartan_core.studies.common import Unavailable
from spartan_core.studies.seeds import Seeds, spread

SETTINGS = study.CircuitSettings(n_prompts=4, method="eap", ablations=("resample",), points=4)


@pytest.fixture(scope="module")
def setup():
    model = tiny_gpt2(vocab=addition.VOCAB_SIZE).eval()
    models = {"dense": model, "sparse": sparsify(copy.deepcopy(model), gate_bias=0.0).eval()}
    return study.CircuitSetup("addition", "addition-4l", models, lambda seed: circuits.addition_task(4, seed=seed),
                              sparse_kept_fraction=0.3)


@pytest.fixture(scope="module")
def two_seeds(setup):
    """Two training seeds (here: the same models relabelled) x two prompt sets."""
    runs = [study.measure_sizes(dataclasses.replace(setup, train_seed=s, sparse_kept_fraction=0.3 + s / 10),
                                [0, 1], SETTINGS) for s in (0, 5)]
    return study.TaskSizes("addition", "addition-4l", "eap", 0.9, Seeds(tuple(runs)))


def _needed(rows):
    """A needed frame from (train_seed, prompt_seed, kind, dense, sparse) rows at the 90 % threshold."""
    return pd.DataFrame([{"model": model, "ablation": "resample", "train_seed": t, "prompt_seed": p, "kind": kind,
                          "threshold": 0.9, "needed": count, "total": 100, "m_model": 0.0, "m_empty": -1.0}
                         for t, p, kind, dense, sparse in rows for model, count in (("dense", dense),
                                                                                    ("sparse", sparse))])


def _sizes(needed, kept: dict, performance=None, task="addition", model="addition-4l"):
    """A TaskSizes from a needed frame of several training seeds, split into one SeedSizes per seed."""
    performance = pd.DataFrame() if performance is None else performance
    runs = [study.SeedSizes(seed, needed[needed["train_seed"] == seed], pd.DataFrame(), fraction,
                            performance[performance["train_seed"] == seed] if len(performance) else pd.DataFrame())
            for seed, fraction in kept.items()]
    return study.TaskSizes(task, model, "eap", 0.9, Seeds(tuple(runs)))


def test_task_model_maps_tasks_to_their_models():
    assert study.task_model("addition", "lm", "gpt2") == "addition-4l"
    assert study.task_model("induction", "lm", "gpt2") == "lm"
    assert study.task_model("ioi", "lm", "gpt2") == study.task_model("greater-than", "lm", "gpt2") == "gpt2"
    assert study.task_model("docstring", "lm", "gpt2") == study.CODE_MODEL == "python-lm"
    with pytest.raises(ValueError, match="^tasks: "):
        study.task_model("copying", "lm", "gpt2")
    assert study.exact_affordable(["addition", "docstring", "ioi"], "gpt2", "gpt2") == ["addition", "docstring"]


def test_settings_come_from_the_notebooks_parameters():
    settings = study.CircuitSettings.from_parameters({"n_prompts": 4, "method": "eap-ig", "lm_floor_steps": 5,
                                                      "tasks": ["addition"], "profile": "tiny"})
    assert (settings.n_prompts, settings.method, settings.lm_floor_steps) == (4, "eap-ig", 5)
    assert settings.threshold == study.THRESHOLD and settings.ablations == ("resample",)


def test_the_papers_ranges_are_in_one_table():
    table = study.paper_table()
    assert table.loc["heads", "low"] == 1.4 and table.loc["edges", "high"] == 97.0
    assert set(table.index) == {r.kind for r in study.PAPER_RATIOS}


def test_ratios_aggregate_over_training_seeds_times_prompt_sets():
    # edges: seed 0 gives 2 and 4, seed 1 gives 6 and 8; heads: 1 and 1, 3 and 3.
    rows = [(0, 0, "edges", 20, 10), (0, 1, "edges", 40, 10), (1, 0, "edges", 60, 10), (1, 1, "edges", 80, 10),
            (0, 0, "heads", 2, 2), (0, 1, "heads", 2, 2), (1, 0, "heads", 6, 2), (1, 1, "heads", 6, 2)]
    sizes = _sizes(_needed(rows), {0: 0.1, 1: 0.2})
    draws = sizes.draws()
    assert len(draws) == 8 and {"train_seed", "prompt_seed", "dense", "sparse", "ratio"} <= set(draws.columns)
    edges, heads = (next(r for r in sizes.ratios if r.kind == k) for k in ("edges", "heads"))
    assert edges.over_draws.n == 4 and edges.train_seeds == 2 and edges.prompt_sets == 2
    assert (edges.over_draws.mean, edges.over_draws.low, edges.over_draws.high) == (5.0, 2.0, 8.0)
    assert edges.over_seeds.values == (3.0, 7.0) and edges.within == 2.0
    assert edges.text == "5.0× (2.0×–8.0× over 2 training seeds x 2 prompt sets)"
    assert edges.over_seeds.text(study.TIMES) == "5.0× (3.0×–7.0× over 2 training seeds)"
    assert "so the training seed moves it more" in edges.variation
    assert heads.over_seeds.values == (1.0, 3.0) and heads.within == 0.0 and "training seed moves" in heads.variation
    comparison = circuit_comparison.SizeComparison({"addition": sizes}, "eap", ["resample"])
    row = comparison.ratio_table().set_index("kind").loc["edges"]
    assert (row["draws"], row["train_seeds"], row["prompt_sets"]) == (4, 2, 2)
    assert (row["ratio_min"], row["ratio_mean"], row["ratio_max"]) == (2.0, 5.0, 8.0)
    assert (row["seed_mean_min"], row["seed_mean_max"]) == (3.0, 7.0)
    seeds = comparison.seed_table().sort_index().loc[("addition", "resample", "edges")]
    assert list(seeds["ratio mean"]) == [3.0, 7.0] and list(seeds["n"]) == [2, 2]
    claim = circuit_comparison.circuit_claim(comparison, "edges")
    assert claim.id == "circuit_edges" and claim.verdict == "partly"  # 5.0×: under 5.4×, over 2×
    assert "addition on addition-4l: 5.0× (2.0×–8.0× over 2 training seeds x 2 prompt sets) fewer edges" in \
        claim.sentence
    assert "per-training-seed means 5.0× (3.0×–7.0× over 2 training seeds)" in claim.sentence
    values = claim.values["tasks"]["addition"]
    assert values["over_draws"]["n"] == 4 and values["over_training_seeds"]["values"] == [3.0, 7.0]
    assert "run from 1.0× to 3.0×, 2 of 4 inside the paper's 1.4–4.5×" in comparison.sentence
    assert "run from 2.0× to 8.0×, 2 of 4 inside the paper's 5.4–97×" in comparison.sentence
    assert comparison.variation_sentence.startswith("Where the spread comes from: addition, edges (resample)")


def test_a_draw_never_reaching_the_threshold_is_counted_out():
    rows = [(0, 0, "edges", 20, 10), (0, 1, "edges", np.nan, 10), (0, 0, "heads", 2, 2), (0, 1, "heads", 2, 2)]
    sizes = _sizes(_needed(rows), {0: 0.1})
    edges = next(r for r in sizes.ratios if r.kind == "edges")
    assert edges.over_draws.n == 1 and edges.text == "2.0× (1 of 2 draws of 1 training seed x 2 prompt sets)"
    assert edges.variation == ""


def test_ratio_text_words():
    def text(values, train_seeds, prompt_sets):
        return study.SizeRatio("t", "m", "resample", "edges", spread(values), spread(values), train_seeds,
                               prompt_sets, 0.0).text

    assert text([4.0], 1, 1) == "4.0× (1 training seed x 1 prompt set)"
    assert text([3.0, 5.0, 4.0], 3, 1) == "4.0× (3.0×–5.0× over 3 training seeds x 1 prompt set)"


def test_sizes_over_two_training_seeds(two_seeds):
    sizes = two_seeds
    assert sizes.train_seeds == [0, 5] and sizes.prompt_seeds == [0, 1]
    assert {(r.ablation, r.kind) for r in sizes.ratios} == {("resample", "edges"), ("resample", "heads")}
    for r in sizes.ratios:
        assert r.over_draws.n == 4 and r.over_seeds.n == 2
        assert r.over_draws.low <= r.over_draws.mean <= r.over_draws.high
        assert r.over_draws.low <= r.over_seeds.low <= r.over_seeds.high <= r.over_draws.high
    draws = sizes.draws()
    assert set(zip(draws["train_seed"], draws["prompt_seed"])) == {(t, p) for t in (0, 5) for p in (0, 1)}
    run = sizes.runs.runs[1]
    curves, needed = run.curves, run.needed
    assert set(curves["train_seed"]) == set(needed["train_seed"]) == {5} and "prompt_seed" in curves
    metrics = json.loads(json.dumps(sizes.to_metrics()))
    assert metrics["train_seeds"] == [0, 5] and metrics["sparse_kept_fraction"]["n"] == 2
    assert set(metrics["needed_at_threshold"]["resample"]["edges"]) == {"dense", "sparse"}
    with pytest.raises(ValueError, match="^runs: a training seed appears twice"):
        study.TaskSizes("addition", "addition-4l", "eap", 0.9, Seeds(sizes.runs.runs * 2))


def test_comparison_tables_sentences_and_metrics(two_seeds):
    comparison = circuit_comparison.SizeComparison({"addition": two_seeds, "ioi": Unavailable("gpt2", "offline")}, "eap",
                                      ["resample"])
    ratios = comparison.ratio_table()
    assert list(ratios.columns) == study.RATIO_COLUMNS and len(ratios) == 2
    assert (ratios["draws"] == 4).all() and (ratios["train_seeds"] == 2).all() and (ratios["prompt_sets"] == 2).all()
    assert ((ratios["ratio_min"] <= ratios["ratio_mean"]) & (ratios["ratio_mean"] <= ratios["ratio_max"])).all()
    assert len(comparison.draws_table()) == 2 * 2 * 2
    claim = circuit_comparison.circuit_claim(comparison, "edges")
    assert claim.sentence.endswith("; ioi on gpt2: pending (offline)")
    assert "over 2 training seeds x 2 prompt sets) fewer edges; per-training-seed means" in claim.sentence
    assert comparison.tasks_sentence.startswith("- addition on ")
    assert comparison.tasks_sentence.endswith("\n- Not measured: ioi on gpt2: pending (offline).")
    assert "Per training seed (mean over its prompt sets)" in two_seeds.sentence
    assert "inside the paper's 5.4–97×" in comparison.sentence
    metrics = json.loads(json.dumps(comparison.to_metrics()))
    assert metrics["tasks"]["ioi"] == {"status": "pending", "model": "gpt2", "reason": "offline"}
    assert len(metrics["ratios_at_threshold"]) == 2 and len(metrics["ratios_by_draw"]) == 8
    assert len(comparison.needed_table()) == len(two_seeds.needed)


def test_measure_task_loops_training_seeds_and_stops_at_an_unavailable_one(setup, monkeypatch):
    asked = []

    def fake_setup(task, model, settings, seed):
        asked.append(seed)
        return dataclasses.replace(setup, train_seed=seed) if seed < 2 else Unavailable(model, "offline")

    monkeypatch.setattr(study, "circuit_setup", fake_setup)
    sizes = study.measure_task("addition", "addition-4l", [0, 1], [0], SETTINGS)
    assert asked == [0, 1] and sizes.train_seeds == [0, 1] and all(r.over_draws.n == 2 for r in sizes.ratios)
    assert isinstance(study.measure_task("addition", "addition-4l", [0, 2, 1], [0], SETTINGS), Unavailable)
    assert asked[-2:] == [0, 2]


def test_method_agreement_per_model_and_method(setup):
    agreement = circuit_comparison.method_agreement(setup, seed=0, methods=("eap",))
    assert set(agreement.spearman) == {"dense", "sparse"} and -1 <= agreement.spearman["dense"]["eap"] <= 1
    assert agreement.table().shape == (1, 2) and agreement.sentence.startswith("addition: rank correlation")
    assert "training seed 0 only" in agreement.sentence


def test_nothing_measured_says_so():
    comparison = circuit_comparison.SizeComparison({"ioi": Unavailable("gpt2", "offline")}, "eap", ["resample"])
    assert comparison.ratio_table().empty and "No task could be measured" in comparison.sentence
    assert "cannot be split" in comparison.variation_sentence
    assert comparison.draws_table().empty and comparison.seed_table().empty


def test_a_sparse_model_with_no_effect_is_flagged():
    rows = [{"model": model, "ablation": "resample", "train_seed": 0, "prompt_seed": 0, "kind": kind,
             "threshold": 0.9, "needed": needed, "total": 10, "m_model": m_model, "m_empty": -1.0}
            for model, needed, m_model in (("dense", 8.0, 0.0), ("sparse", 2.0, -1.0)) for kind in ("edges", "heads")]
    sizes = _sizes(pd.DataFrame(rows), {0: 0.1})
    assert "4.0× (1 training seed x 1 prompt set) fewer edges (resample ablation)" in sizes.sentence
    assert "almost no effect to explain" in sizes.sentence


def test_the_notebook_check_rejects_wrong_aggregation():
    """``_check_06`` (run on the notebook's metrics) accepts this module's metrics and rejects a missing draw, a
    wrong count of draws or a mean that is not the mean of the draws."""
    import checks_chapters_4_6

    rows = [(t, p, kind, 10 * (t + p + 2), 10) for t in (0, 1) for p in (0, 1, 2) for kind in ("edges", "heads")]
    sizes = _sizes(_needed(rows), {0: 0.1, 1: 0.2})
    metrics = json.loads(json.dumps(circuit_comparison.SizeComparison({"addition": sizes}, "eap", ["resample"]).to_metrics()))
    parameters = {"tasks": ["addition"], "ablations": ["resample"], "train_seeds": [0, 1], "prompt_seeds": [0, 1, 2],
                  "check_prompts": 0}
    check = checks_chapters_4_6.CHECKS["06_circuits"]
    check(metrics, None, parameters)
    with pytest.raises(AssertionError):
        check(metrics, None, {**parameters, "train_seeds": [0, 1, 2]})
    broken = copy.deepcopy(metrics)
    broken["ratios_by_draw"] = broken["ratios_by_draw"][1:]
    with pytest.raises(AssertionError):
        check(broken, None, parameters)
    broken = copy.deepcopy(metrics)
    broken["ratios_at_threshold"][0]["ratio_mean"] = broken["ratios_at_threshold"][0]["seed_mean_max"]
    with pytest.raises(AssertionError):
        check(broken, None, parameters)
    broken = copy.deepcopy(metrics)
    broken["ratios_at_threshold"][0]["draws"] = 3
    with pytest.raises(AssertionError):
        check(broken, None, parameters)


def test_ratio_figure_shows_every_draw_grouped_by_training_seed():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spartan_core import plots

    rows = [(t, p, kind, 10 * (t + p + 2), 10) for t in (0, 1) for p in (0, 1, 2) for kind in ("edges", "heads")]
    sizes = _sizes(_needed(rows), {0: 0.1, 1: 0.2})
    fig = plots.ratio_draws(sizes.draws(), study.PAPER_RATIOS)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        points = [c for c in ax.collections if hasattr(c, "get_offsets") and len(c.get_offsets()) == 3]
        assert len(points) == 2, "one group of three prompt-set points per training seed"
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "training seed 0" in labels and "training seed 1" in labels and any(
            label.startswith("the paper,") for label in labels)
    plt.close(fig)


def _sized_with(accuracies: dict) -> "study.TaskSizes":
    rows = [{"train_seed": t, "prompt_seed": p, "model": model, "accuracy": acc, "metric": acc * 2, "prompts": 8}
            for model, values in accuracies.items() for (t, p), acc in values.items()]
    needed = _needed([(0, 0, "edges", 4, 2), (0, 0, "heads", 2, 1)])
    kept = {t: 0.1 for t, _ in accuracies["dense"]}
    return _sizes(needed, kept, pd.DataFrame(rows), task="docstring", model="python-lm")


def test_a_distractor_task_counts_only_when_the_dense_model_clears_twice_chance():
    good = _sized_with({"dense": {(0, 0): 0.75, (1, 0): 0.625}, "sparse": {(0, 0): 0.5, (1, 0): 0.5}})
    assert good.counts and good.performance_spreads()["dense"]["accuracy"].mean == pytest.approx(0.6875)
    sentence = study.performance_sentence(good)
    assert "clears the bar of 67%" in sentence and "chance 33%" in sentence and "count" in sentence
    metrics = good.to_metrics()["performance"]
    assert metrics["counts"] and metrics["chance"] == pytest.approx(1 / 3) and metrics["dense"]["accuracy"]["n"] == 2
    weak = _sized_with({"dense": {(0, 0): 0.5}, "sparse": {(0, 0): 0.25}})
    assert not weak.counts and "does not clear" in study.performance_sentence(weak)
    assert "does not count" in study.performance_sentence(weak)


def test_task_performance_scores_each_model_on_every_clean_prompt_set():
    from spartan_core.data.tokenizers import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    model = tiny_gpt2(vocab=50257).eval()
    names = ["name", "value", "path", "size", "key", "data", "mode"]
    setup = study.CircuitSetup("docstring", "python-lm", {"dense": model, "sparse": model},
                               lambda seed: circuits.docstring_task(tokenizer, names, ["encode"], 4, seed=seed), 0.2)
    table = study.task_performance(setup, [0, 1])
    assert len(table) == 4 and set(table["model"]) == {"dense", "sparse"} and (table["prompts"] == 4).all()
    assert table["accuracy"].between(0, 1).all()
    same = table.pivot(index="prompt_seed", columns="model", values="metric")
    assert np.allclose(same["dense"], same["sparse"]), "the same model scores the same on the same prompts"


def test_the_claim_rules_reach_every_verdict():
    """circuit_edges: every counting task ≥ 5.4×, partly when one ≥ 2×; circuit_heads: 1.4× and 1.4×; no task that
    counts: cannot test here. A task that does not count (Docstring, dense model under twice chance) is left out."""
    failing = pd.DataFrame([{"train_seed": 0, "prompt_seed": 0, "model": m, "accuracy": 0.5, "metric": 0.1,
                             "prompts": 8} for m in ("dense", "sparse")])

    def verdict(kind, ratios, docstring=None):
        tasks = {task: _sizes(_needed([(0, 0, kind, 10 * ratio, 10)]), {0: 0.1}, task=task)
                 for task, ratio in ratios.items()}
        if docstring is not None:
            tasks["docstring"] = _sizes(_needed([(0, 0, kind, 10 * docstring, 10)]), {0: 0.1}, failing,
                                        task="docstring", model="python-lm")
        tasks["ioi"] = Unavailable("gpt2", "offline")
        claim = circuit_comparison.circuit_claim(circuit_comparison.SizeComparison(tasks, "eap", ["resample"]), kind)
        assert claim.rule == circuit_comparison.CLAIM_RULES[kind][2] and claim.id == f"circuit_{kind}"
        return claim.verdict

    assert verdict("edges", {"addition": 6.0}, docstring=0.5) == "reproduced"
    assert verdict("edges", {"addition": 6.0, "induction": 3.9}) == "partly"
    assert verdict("edges", {"addition": 1.9, "induction": 1.0}, docstring=9.0) == "not reproduced"
    assert verdict("edges", {}, docstring=9.0) == verdict("edges", {}) == "cannot test here"
    assert verdict("heads", {"addition": 1.4, "induction": 2.0}) == "reproduced"
    assert verdict("heads", {"addition": 1.5, "induction": 1.0}) == "partly"
    assert verdict("heads", {"addition": 1.3}) == "not reproduced"
    assert circuit_comparison.CLAIM_RULES["edges"][2].startswith("reproduced when every task that counts needs ≥ 5.4× fewer edges")


def test_method_agreements_form_one_table_with_the_task_named():
    from spartan_core.studies.circuit_comparison import MethodAgreement, agreement_table

    agreements = [MethodAgreement(8, {"dense": {"eap": 0.7, "eap-ig": 0.6}, "sparse": {"eap": 0.9, "eap-ig": 0.8}},
                                  task=task) for task in ("addition", "induction")]
    table = agreement_table(agreements)
    assert list(table.index) == [("addition", "eap"), ("addition", "eap-ig"), ("induction", "eap"),
                                 ("induction", "eap-ig")]
    assert list(table.columns) == ["dense", "sparse"] and table.loc[("induction", "eap"), "sparse"] == 0.9
    assert agreement_table([]) is None
