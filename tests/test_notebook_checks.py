"""The notebook checks of ``tests/test_notebooks.py`` can fail, and its paper-profile stand-ins are valid
parameters: fast tests, so a broken check or stand-in shows up without executing any notebook."""

import pytest

from spartan_core import notebook_runner
from test_notebooks import CHECKS, STAND_IN

BROKEN = {
    "03_edges_and_loss": {"models": {"m": {"model": "m", "status": "measured", "post_trained": False,
                                           "dense_ce": 1.0, "gated_ce": 2.0, "gated_kept_fraction": 1.5,
                                           "gated_kept_per_query": 1.0, "context_length": 8,
                                           "gated_ce_increase_pct": 100.0}},
                          "model_cards": {"m": {"model": "m", "status": "measured", "heldout_ce": 1.0,
                                                "n_params": 10}}},
    "04_attention_patterns": {"status": "pending", "reason": ""},
    "05_addition": {"kept_fraction": 0.1, "kept_per_query_per_layer": [1, 1, 1],
                    "dense_exact_match": {}, "sparse_exact_match": {}},
    "06_circuits": {"tasks": {"addition": {"status": "measured", "needed_at_90": {"resample/edges/sparse": 0}}},
                    "ratios_at_90": [{"task": "addition", "ablation": "resample", "kind": kind, "min": 1.0,
                                      "dense / sparse (mean)": 2.0, "max": 3.0} for kind in ("edges", "heads")]},
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_checks_reject_broken_metrics(name):
    parameters = {"tasks": ["addition"], "ablations": ["resample"], "check_prompts": 0}
    with pytest.raises((AssertionError, KeyError)):
        CHECKS[name](BROKEN[name], None, parameters)


@pytest.mark.parametrize("name", sorted(STAND_IN))
def test_stand_ins_are_valid_paper_parameters(name):
    params = notebook_runner.resolve_parameters(name, "paper", STAND_IN[name])
    assert params["profile"] == "paper"
