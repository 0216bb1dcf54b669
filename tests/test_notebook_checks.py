"""The notebook checks of ``tests/test_notebooks.py`` can fail, and its paper-profile stand-ins are valid
parameters: fast tests, so a broken check or stand-in shows up without executing any notebook."""

import pytest

from spartan_core import notebook_runner
from test_notebooks import CHECKS, STAND_IN

@pytest.mark.parametrize("name", ["03_edges_and_loss", "04_attention_patterns", "05_addition"])
def test_checks_reject_broken_metrics(name):
    broken = {
        "03_edges_and_loss": {"models": {"m": {"model": "m", "status": "measured", "post_trained": False,
                                               "dense_ce": 1.0, "gated_ce": 2.0, "gated_kept_fraction": 1.5,
                                               "gated_kept_per_query": 1.0, "context_length": 8,
                                               "gated_ce_increase_pct": 100.0}}},
        "04_attention_patterns": {"status": "pending", "reason": ""},
        "05_addition": {"kept_fraction": 0.1, "kept_per_query_per_layer": [1, 1, 1],
                        "dense_exact_match": {}, "sparse_exact_match": {}},
    }[name]
    with pytest.raises((AssertionError, KeyError)):
        CHECKS[name](broken, None, {})


@pytest.mark.parametrize("name", sorted(STAND_IN))
def test_stand_ins_are_valid_paper_parameters(name):
    params = notebook_runner.resolve_parameters(name, "paper", STAND_IN[name])
    assert params["profile"] == "paper"
