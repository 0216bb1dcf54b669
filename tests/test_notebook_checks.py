"""The notebook checks of ``tests/test_notebooks.py`` can fail, and its paper-profile stand-ins are valid
parameters: fast tests, so a broken check or stand-in shows up without executing any notebook."""

import pytest

from companion import runner as notebook_runner
import checks_chapters_1_3
import checks_chapters_4_6
import checks_chapter_7
import checks_chapter_8
from test_notebooks import CHECKS, STAND_IN

BROKEN = {**checks_chapters_1_3.BROKEN, **checks_chapters_4_6.BROKEN, **checks_chapter_7.BROKEN,
          **checks_chapter_8.BROKEN}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_checks_reject_broken_metrics(name):
    parameters = {"tasks": ["addition"], "ablations": ["resample"], "check_prompts": 0, "models": ["addition-4l"],
                  "policies": ["window"], "addition_budgets": [1.0], "lm_budgets": [1.0], "controllers": [],
                  "fixed_betas": [], "controller_seeds": [0]}
    with pytest.raises((AssertionError, KeyError)):
        CHECKS[name](BROKEN[name], None, parameters)


@pytest.mark.parametrize("name", sorted(STAND_IN))
def test_stand_ins_are_valid_paper_parameters(name):
    params = notebook_runner.resolve_parameters(name, "paper", STAND_IN[name])
    assert params["profile"] == "paper"
