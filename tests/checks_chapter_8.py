"""What the explorer chapter's results must hold (test_notebooks.py runs it under smoke and the paper stand-in)."""

import re

from checks_common import metrics_files


def _check_08(metrics, folder=None, parameters=None):
    assert set(metrics["circuit_heads"]) == {"dense", "sparse"}
    for heads in metrics["circuit_heads"].values():
        assert all(re.fullmatch(r"a\d+\.h\d+", head) for head in heads)
    assert 0 < metrics["threshold"] <= 1
    if parameters is not None:
        assert len(parameters["examples"]) <= metrics["problems"] <= len(parameters["examples"]) + parameters["n_problems"]
    if folder is not None:
        assert "edges_drawn.csv" in metrics_files(folder)


CHECKS = {"08_explorer": _check_08}

BROKEN = {"08_explorer": {"circuit_heads": {"dense": ["head 3"], "sparse": []}, "threshold": 0.9, "problems": 3}}
