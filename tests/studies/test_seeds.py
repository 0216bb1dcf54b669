"""Numbers over training seeds: mean with min-max, one draw said as one, nothing non-finite averaged."""

import pandas as pd
import pytest

from spartan_core.formatting import PERCENT, TIMES
from spartan_core.studies.seeds import spread, spread_table


def test_a_spread_is_mean_with_min_max_and_names_what_it_is_over():
    values = spread([0.0147, 0.0140, 0.0141])
    assert (values.n, values.low, values.high) == (3, 0.0140, 0.0147)
    assert values.mean == pytest.approx(0.01427, abs=1e-5)
    assert values.text(PERCENT) == "1.43% (1.40%–1.47% over 3 seeds)"
    assert spread([4.0, 2.9, 5.8], over="seeds x prompt sets").text(TIMES) == "4.2× (2.9×–5.8× over 3 seeds x prompt sets)"
    assert spread([0.5]).text(PERCENT) == "50.00% (1 seed)"
    assert values.to_dict() == {"mean": values.mean, "min": 0.0140, "max": 0.0147, "n": 3,
                                "values": [0.0147, 0.0140, 0.0141]}


def test_the_mean_of_equal_values_is_never_outside_them():
    for value in (0.2, 0.1, 1 / 3):
        same = spread([value] * 3)
        assert same.low <= same.mean <= same.high


def test_empty_and_non_finite_draws_are_refused():
    with pytest.raises(ValueError, match="^values: a spread needs at least one value"):
        spread([])
    with pytest.raises(ValueError, match="^values: not all finite"):
        spread([1.0, float("nan")])


def test_spread_table_summarises_each_group_over_its_rows():
    frame = pd.DataFrame({"model": ["a", "a", "b"], "seed": [0, 1, 0], "kept": [0.1, 0.3, 0.5]})
    table = spread_table(frame, "model", ["kept"])
    assert table.loc["a", "kept mean"] == pytest.approx(0.2) and table.loc["a", "kept min"] == 0.1
    assert table.loc["a", "kept max"] == 0.3 and list(table["n"]) == [2, 1]


def test_summary_says_all_seeds_when_they_agree_at_the_shown_precision():
    assert spread([0.0861, 0.0859, 0.0860]).summary(lambda v: f"{v:.2f}") == "0.09 (all 3 seeds)"
    assert spread([0.2, 0.2]).summary(PERCENT) == "20.00% (both seeds)"
    assert spread([0.1, 0.3]).summary(PERCENT) == spread([0.1, 0.3]).text(PERCENT)
