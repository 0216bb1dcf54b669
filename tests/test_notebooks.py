"""Every notebook runs end to end under the smoke profile, the paper profile's code path runs with tiny offline
stand-ins, and a notebook run outside the runner still refuses a bad parameter before writing anything.

Each test starts a Jupyter kernel (about 15 s each on two cores), hence ``slow``. Nothing here touches the
committed ``results/`` or ``book/``: every run writes into a temporary folder.
"""

import json
import math

import nbformat
import pytest

from spartan_core import notebook_runner
from spartan_core.results import read_metrics

pytestmark = pytest.mark.slow

NOTEBOOKS = notebook_runner.notebook_names()

# Paper-profile runs with the model/data sizes swapped for stand-ins a CPU runs in seconds; every other
# parameter (and the code path it selects) stays the paper profile's. Model sizes and training steps match the
# smoke profile's, so both tests share the cached stand-in models. A new notebook needs an entry here.
STAND_IN = {
    "01_gated_attention": {"n_samples": 500, "model_layers": 2, "model_heads": 2, "model_tokens": 32,
                           "head_dim": 16, "batch_size": 2},
    "02_sparsity_loss_curves": {"model": "addition-4l", "dense_steps": 30, "steps": 12, "batch_size": 32,
                                "eval_every": 6, "eval_batch_size": 500, "eval_max_batches": 1,
                                "fixed_betas": [1.0]},
    "03_edges_and_loss": {"model_names": ["gpt2", "addition-4l"], "post_train": ["gpt2", "addition-4l"],
                          "dense_steps": 30, "sparse_steps": 20, "eval_blocks": 2, "block_size": 64,
                          "eval_batch_size": 500},
    "04_attention_patterns": {"sparse_steps": 2, "text_tokens": 16, "induction_sequences": 2,
                              "induction_half": 8},
    "05_addition": {"dense_steps": 30, "sparse_steps": 20, "batch_size": 1000, "circuit_problems": 16,
                    "circuit_method": "eap"},
    "06_circuits": {"dense_steps": 30, "sparse_steps": 20, "lm_sparse_steps": 20, "lm_floor_steps": 5,
                    "method": "eap", "seeds": [0], "n_prompts": 8, "points": 6, "check_prompts": 8},
}


def _check_01(metrics, folder, parameters):
    assert metrics["open_gates_max_abs_logit_diff"] < 1e-5, "open gates must reproduce dense logits"
    assert metrics["open_gates_max_abs_attention_diff"] < 1e-5
    assert metrics["gated_max_abs_logit_diff"] > 0, "closed gates must change the model"
    assert 0 <= metrics["example_row_sum_min"] <= metrics["example_row_sum_max"] <= 1 + 1e-6
    assert metrics["sampling_max_abs_error"] < 6 * metrics["sampling_noise_sd_bound"]
    assert all(0 < f < 1 for f in metrics["gated_kept_fraction_by_layer"])


def _check_02(metrics, folder, parameters):
    import pandas as pd

    history = pd.read_csv(folder / "geco_history.csv")
    assert len(history) == parameters["steps"] and history["step"].tolist() == list(range(1, len(history) + 1))
    assert metrics["evals"] == -(-parameters["steps"] // parameters["eval_every"])
    assert 0 < metrics["kept_fraction"] <= 1 and 0 < metrics["expected_fraction_last"] <= 1
    assert metrics["tau"] > 0 and metrics["beta_max"] >= metrics["beta_first"] > 0
    tradeoff = pd.read_csv(folder / "tradeoff.csv")
    assert tradeoff["method"].tolist() == ["GECO"] + ["fixed β"] * len(parameters["fixed_betas"])
    assert tradeoff["beta"].iloc[1:].tolist() == parameters["fixed_betas"]
    assert {"training_dynamics.png", "tradeoff.png"} <= set(metrics_files(folder))


def _fraction(value) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


def _check_03(metrics, folder=None, parameters=None):
    rows = metrics["models"]
    assert rows, "at least one model row"
    assert set(metrics["model_cards"]) == set(rows)
    for name, card in metrics["model_cards"].items():
        assert card["status"] == rows[name]["status"]
        if card["status"] == "measured":
            assert card["heldout_ce"] > 0 and card["n_params"] > 0
            if parameters and parameters.get("kjv_blocks") and name != "addition-4l":
                assert card["kjv_ce"] > 0 and 0 < card["kjv_blocks"] <= parameters["kjv_blocks"]
    for name, row in rows.items():
        assert row["model"] == name and row["status"] in ("measured", "pending")
        if row["status"] == "pending":
            assert row["reason"] and "dense_ce" not in row, "a pending model has a reason and no numbers"
            continue
        assert row["dense_ce"] > 0 and row["gated_ce"] > 0
        assert _fraction(row["gated_kept_fraction"]) and row["gated_kept_per_query"] <= row["context_length"]
        assert math.isclose(row["gated_ce_increase_pct"], 100 * (row["gated_ce"] / row["dense_ce"] - 1), rel_tol=1e-6)
        if row["post_trained"]:
            assert _fraction(row["sparse_kept_fraction"]) and row["sparse_ce"] > 0
            assert len(row["sparse_per_head"]) == len(row["sparse_per_layer"])


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
    assert _fraction(metrics["kept_fraction"])


def _check_05(metrics, folder=None, parameters=None):
    assert _fraction(metrics["kept_fraction"]) and len(metrics["kept_per_query_per_layer"]) == 4
    for kind in ("dense", "sparse"):
        match = metrics[f"{kind}_exact_match"]
        assert _fraction(match["all"]) and match["n_all"] == 2000
    best = metrics["most_selective_sparse"]
    assert _fraction(best["with_carry"]) and _fraction(best["without_carry"]) and best["relevant"]
    assert math.isclose(best["selectivity"], best["with_carry"] - best["without_carry"], abs_tol=1e-9)
    assert all(row["dense"] > 0 for row in metrics["figure1_edges_drawn"])


def metrics_files(folder):
    return read_metrics(folder)["files"]


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


def _no_extra_check(metrics, folder, parameters):
    """Notebooks without their own assertions get the common ones of the tests below."""


CHECKS = {"01_gated_attention": _check_01, "02_sparsity_loss_curves": _check_02, "03_edges_and_loss": _check_03,
          "04_attention_patterns": _check_04, "05_addition": _check_05, "06_circuits": _check_06}


def _run(name, profile, tmp_path, overrides=None):
    executed = notebook_runner.run_notebook(
        name, profile, overrides, executed_dir=tmp_path / "executed", chapters_dir=tmp_path / "chapters",
        results_root=tmp_path / "results", timeout_s=300, publish=True, allow_cpu=True,
    )
    return executed, read_metrics(tmp_path / "results" / profile / name)


def test_every_notebook_has_a_stand_in():
    assert set(NOTEBOOKS) <= set(STAND_IN), "add the new notebook's paper-profile stand-in to STAND_IN"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_under_smoke(name, tmp_path):
    executed, data = _run(name, "smoke", tmp_path)
    prov = data["provenance"]
    assert prov["status"] == "complete" and prov["profile"] == "smoke" and prov["notebook"] == name
    for file in data["files"]:
        assert (tmp_path / "results" / "smoke" / name / file).stat().st_size > 0
    assert any(f.endswith(".png") for f in data["files"]), "every chapter shows at least one figure"
    CHECKS.get(name, _no_extra_check)(data["metrics"], tmp_path / "results" / "smoke" / name, prov["parameters"])
    assert data["claims"], "every chapter feeds the claims table"

    nb = nbformat.read(str(executed), as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    chapter = nbformat.read(str(tmp_path / "chapters" / f"{name}.ipynb"), as_version=4)
    hidden = [c for c in chapter.cells if {"parameters", "injected-parameters"} & set(c.metadata.get("tags", []))]
    assert hidden and all("remove-cell" in c.metadata["tags"] for c in hidden)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_paper_profile_code_path_with_stand_ins(name, tmp_path):
    _, data = _run(name, "paper", tmp_path, STAND_IN[name])
    prov = data["provenance"]
    assert prov["status"] == "complete" and prov["profile"] == "paper"
    paper = notebook_runner.resolve_parameters(name, "paper")
    expected = {**paper, **STAND_IN[name]}
    assert set(STAND_IN[name]) <= set(paper), "a stand-in may only replace paper-profile parameters"
    assert prov["parameters"] == json.loads(json.dumps(expected))
    CHECKS.get(name, _no_extra_check)(data["metrics"], tmp_path / "results" / "paper" / name, prov["parameters"])


def test_notebook_itself_refuses_a_misspelt_parameter_before_writing(tmp_path, monkeypatch):
    import papermill
    from papermill.exceptions import PapermillExecutionError

    monkeypatch.setenv("SPARTAN_RESULTS", str(tmp_path / "results"))
    with pytest.raises(PapermillExecutionError) as error:
        papermill.execute_notebook(
            str(notebook_runner.NOTEBOOKS_DIR / "01_gated_attention.ipynb"), str(tmp_path / "out.ipynb"),
            parameters={"n_sampels": 10}, kernel_name="python3", progress_bar=False,
            cwd=str(notebook_runner.REPO_ROOT),
        )
    assert error.value.ename == "ValueError"
    assert error.value.evalue.startswith("n_sampels: not a parameter of 01_gated_attention")
    assert not (tmp_path / "results").exists()
