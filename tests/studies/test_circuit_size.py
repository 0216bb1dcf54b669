"""spartan_core.studies.circuit_size: which model a task runs on, sizes and ratios dense vs sparse, the paper's
ranges in one place, method agreement, and the sentences they give."""

import copy
import json

import pandas as pd
import pytest

from conftest import tiny_gpt2
from spartan_core import circuits
from spartan_core.data import addition
from spartan_core.mechanism.sparsify import sparsify
from spartan_core.studies import circuit_size as study
from spartan_core.studies.common import Unavailable


@pytest.fixture(scope="module")
def setup():
    model = tiny_gpt2(vocab=addition.VOCAB_SIZE).eval()
    models = {"dense": model, "sparse": sparsify(copy.deepcopy(model), gate_bias=0.0).eval()}
    return study.CircuitSetup("addition", "addition-4l", models, lambda seed: circuits.addition_task(4, seed=seed),
                              sparse_kept_fraction=0.3)


def test_task_model_maps_tasks_to_their_models():
    assert study.task_model("addition", "lm", "gpt2") == "addition-4l"
    assert study.task_model("induction", "lm", "gpt2") == "lm"
    assert study.task_model("ioi", "lm", "gpt2") == study.task_model("greater-than", "lm", "gpt2") == "gpt2"
    with pytest.raises(ValueError, match="^tasks: "):
        study.task_model("docstring", "lm", "gpt2")


def test_the_papers_ranges_are_in_one_table():
    table = study.paper_table()
    assert table.loc["heads", "low"] == 1.4 and table.loc["edges", "high"] == 97.0
    assert set(table.index) == {r.kind for r in study.PAPER_RATIOS}


def test_sizes_ratios_and_sentences(setup):
    sizes = study.measure_sizes(setup, [0, 1], method="eap", ablations=["resample"], points=4)
    assert {(r.ablation, r.kind) for r in sizes.ratios} == {("resample", "edges"), ("resample", "heads")}
    assert all(r.prompt_sets == 2 and r.ratio_min <= r.ratio_mean <= r.ratio_max for r in sizes.ratios)
    metrics = json.loads(json.dumps(sizes.to_metrics()))
    assert set(metrics["needed_at_threshold"]["resample"]["edges"]) == {"dense", "sparse"}
    comparison = study.SizeComparison({"addition": sizes, "ioi": Unavailable("gpt2", "offline")}, "eap", ["resample"])
    ratios = comparison.ratio_table()
    assert list(ratios.columns) == ["task", "model", "ablation", "kind", "ratio_mean", "ratio_min", "ratio_max",
                                    "prompt_sets"]
    assert comparison.claim_line("edges").endswith("; ioi on gpt2: pending (offline)")
    assert comparison.tasks_sentence.endswith("Not measured: ioi on gpt2: pending (offline).")
    assert "fewer edges (prompt sets:" in comparison.claim_line("edges")
    assert "inside the paper's 5.4–97×" in comparison.sentence and "prompt set(s)" in sizes.sentence
    metrics = json.loads(json.dumps(comparison.to_metrics()))
    assert metrics["tasks"]["ioi"] == {"status": "pending", "model": "gpt2", "reason": "offline"}
    assert len(metrics["ratios_at_threshold"]) == 2 and len(comparison.needed_table()) == len(sizes.needed)


def test_method_agreement_per_model_and_method(setup):
    agreement = study.method_agreement(setup, seed=0, methods=("eap",))
    assert set(agreement.spearman) == {"dense", "sparse"} and -1 <= agreement.spearman["dense"]["eap"] <= 1
    assert agreement.table().shape == (1, 2) and agreement.sentence.startswith("Rank correlation")


def test_nothing_measured_says_so():
    comparison = study.SizeComparison({"ioi": Unavailable("gpt2", "offline")}, "eap", ["resample"])
    assert comparison.ratio_table().empty and "No task could be measured" in comparison.sentence


def test_a_sparse_model_with_no_effect_is_flagged():
    rows = [{"model": model, "ablation": "resample", "seed": 0, "kind": kind, "threshold": 0.9, "needed": needed,
             "total": 10, "m_model": m_model, "m_empty": -1.0}
            for model, needed, m_model in (("dense", 8.0, 0.0), ("sparse", 2.0, -1.0)) for kind in ("edges", "heads")]
    ratios = [study.SizeRatio("addition", "addition-4l", "resample", kind, 4.0, 4.0, 4.0, 1)
              for kind in ("edges", "heads")]
    sizes = study.TaskSizes("addition", "addition-4l", "eap", 0.9, pd.DataFrame(rows), pd.DataFrame(), ratios, 0.1)
    assert "4.0× fewer edges (resample ablation)" in sizes.sentence
    assert "almost no effect to explain" in sizes.sentence
