"""Every notebook runs end to end under the smoke profile, the paper profile's code path runs with tiny offline
stand-ins, and a notebook run outside the runner still refuses a bad parameter before writing anything.

Each test starts a Jupyter kernel (about 15 s each on two cores), hence ``slow``. Nothing here touches the
committed ``results/`` or ``book/``: every run writes into a temporary folder.
"""

import json
import math

import nbformat
import pytest

import checks_chapters_1_3
import checks_chapters_4_6
import checks_chapter_7
import checks_chapter_8
from companion import params
from companion import runner as notebook_runner
from companion.results import read_metrics

pytestmark = pytest.mark.slow

NOTEBOOKS = params.notebook_names()

# Paper-profile runs with the model/data sizes swapped for stand-ins a CPU runs in seconds; every other
# parameter (and the code path it selects) stays the paper profile's. Model sizes and training steps match the
# smoke profile's, so both tests share the cached stand-in models. A new notebook needs an entry here.
STAND_IN = {
    "01_gated_attention": {"n_samples": 500, "model_layers": 2, "model_heads": 2, "model_tokens": 32,
                           "head_dim": 16, "batch_size": 2},
    "02_sparsity_loss_curves": {"model": "addition-4l", "dense_steps": 30, "steps": 12, "batch_size": 32,
                                "eval_every": 6, "eval_batch_size": 500, "eval_max_batches": 1,
                                "fixed_betas": [1.0], "train_seeds": [0]},
    "03_edges_and_loss": {"model_names": ["gpt2", "addition-4l"], "post_train": ["gpt2", "addition-4l"],
                          "dense_steps": 30, "sparse_steps": 20, "eval_blocks": 2, "block_size": 64,
                          "eval_batch_size": 500, "train_seeds": [0], "thread_check": 0},
    "04_attention_patterns": {"sparse_steps": 2, "text_tokens": 16, "induction_sequences": 2,
                              "induction_half": 8, "train_seeds": [0]},
    "05_addition": {"dense_steps": 30, "sparse_steps": 20, "batch_size": 1000, "circuit_problems": 16,
                    "circuit_method": "eap", "train_seeds": [0]},
    "06_circuits": {"dense_steps": 30, "sparse_steps": 20, "lm_sparse_steps": 20, "lm_floor_steps": 5,
                    "method": "eap", "prompt_seeds": [0], "train_seeds": [0], "n_prompts": 8, "points": 6, "check_prompts": 8},
    "07_baselines": {"dense_steps": 30, "learned_steps": 20, "models": ["addition-4l"], "addition_budgets": [1.0],
                     "lm_budgets": [1.0], "addition_steps": 5, "lm_steps": 5, "heldout_max_batches": 1, "threads": 1,
                     "controller_seeds": [0], "fixed_betas": [1.0], "controller_steps": 10,
                     "controller_batch_size": 32, "controller_eval_every": 5},
    "08_explorer": {"dense_steps": 30, "sparse_steps": 20, "n_problems": 2, "circuit_problems": 16,
                    "circuit_method": "eap"},
}


def _no_extra_check(metrics, folder, parameters):
    """Notebooks without their own assertions get the common ones of the tests below."""


CHECKS = {**checks_chapters_1_3.CHECKS, **checks_chapters_4_6.CHECKS, **checks_chapter_7.CHECKS,
          **checks_chapter_8.CHECKS}


def _run(name, profile, tmp_path, overrides=None):
    executed = notebook_runner.run_notebook(
        name, profile, overrides, timeout_s=300, publish=True, allow_cpu=True,
        folders=notebook_runner.Folders(executed=tmp_path / "executed", chapters=tmp_path / "chapters",
                                        results=tmp_path / "results"),
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
    figures = [o["data"]["text/html"] for o in outputs if '<figure class="captioned-figure">' in o.get("data", {}).get(
        "text/html", "")]
    assert figures and all("<figcaption><strong>Figure " in f for f in figures), "every figure is numbered and captioned"
    assert len(figures) == len(set(figures)), "each figure is shown once"
    assert not any("image/png" in o.get("data", {}) for o in outputs), "no figure is shown without its caption"
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
            str(params.NOTEBOOKS_DIR / "01_gated_attention.ipynb"), str(tmp_path / "out.ipynb"),
            parameters={"n_sampels": 10}, kernel_name="python3", progress_bar=False,
            cwd=str(notebook_runner.REPO_ROOT),
        )
    assert error.value.ename == "ValueError"
    assert error.value.evalue.startswith("n_sampels: not a parameter of 01_gated_attention")
    assert not (tmp_path / "results").exists()
