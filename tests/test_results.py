"""The results writer: atomic files, key-by-key merge, provenance, one run per folder."""

import json
import math
import os
import socket

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from spartan_core import results as results_mod  # noqa: E402
from spartan_core.results import ResultsDir, atomic_write_text, read_metrics  # noqa: E402


def test_nothing_is_written_before_the_first_result(tmp_path):
    ResultsDir("smoke", "01_example", {"seed": 0}, root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_metrics_merge_key_by_key_and_keep_provenance(tmp_path):
    run = ResultsDir("tiny", "01_example", {"seed": 3, "lr": 1e-3}, root=tmp_path)
    run.record(a=1, nested={"x": 1.5})
    run.record(b=[1, 2], a=2)
    data = read_metrics(tmp_path / "tiny" / "01_example")
    assert data["metrics"] == {"a": 2, "nested": {"x": 1.5}, "b": [1, 2]}
    prov = data["provenance"]
    assert prov["profile"] == "tiny" and prov["notebook"] == "01_example"
    assert prov["parameters"] == {"seed": 3, "lr": 1e-3}
    assert prov["status"] == "running"
    assert set(prov["versions"]) >= {"python", "torch", "transformers"}
    assert prov["device"]["type"] in ("cpu", "cuda")
    assert len(prov["git_commit"]) == 40 and isinstance(prov["git_dirty"], bool)
    assert prov["wall_time_s"] >= 0 and prov["started_utc"].endswith("+00:00")


def test_killed_run_keeps_what_it_wrote_and_finish_marks_complete(tmp_path):
    run = ResultsDir("tiny", "02_example", {}, root=tmp_path)
    run.record(step_100=0.5)
    del run  # a killed run never calls finish()
    data = read_metrics(tmp_path / "tiny" / "02_example")
    assert data["metrics"] == {"step_100": 0.5} and data["provenance"]["status"] == "running"

    again = ResultsDir("tiny", "02_example", {}, root=tmp_path)
    again.record(final=1.0)
    done = again.finish()
    assert done["provenance"]["status"] == "complete" and "finished_utc" in done["provenance"]
    assert done["metrics"] == {"final": 1.0}, "a new run must not mix in the previous run's keys"


def test_tables_figures_claims_and_stale_files(tmp_path):
    run = ResultsDir("tiny", "03_example", {}, root=tmp_path)
    folder = tmp_path / "tiny" / "03_example"
    folder.mkdir(parents=True)
    (folder / "old_figure.png").write_bytes(b"stale")
    (folder / "notes.txt").write_text("not ours")
    run.table("curve", pd.DataFrame({"step": [0, 1], "ce": [2.0, 1.5]}))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    run.figure(fig, "curve")
    plt.close(fig)
    run.claim("edges_kept", "kept 1.0 % of edges", kept_fraction=0.01)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["curve.csv", "curve.png", "metrics.json", "notes.txt"]
    assert pd.read_csv(folder / "curve.csv")["ce"].tolist() == [2.0, 1.5]
    assert (folder / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "curve.csv").stat().st_mode & 0o444 == 0o444, "results are readable files, not 0600 temps"
    data = read_metrics(folder)
    assert data["files"] == ["curve.csv", "curve.png"]
    assert data["claims"]["edges_kept"] == {"summary": "kept 1.0 % of edges", "kept_fraction": 0.01}


def test_values_are_stored_as_plain_json(tmp_path):
    import numpy as np
    import torch

    run = ResultsDir("tiny", "04_example", {}, root=tmp_path)
    run.record(t=torch.tensor(0.25), arr=np.arange(3), nan=math.nan, inf=float("inf"), tup=(1, 2))
    text = (tmp_path / "tiny" / "04_example" / "metrics.json").read_text()
    data = json.loads(text)["metrics"]
    assert data == {"t": 0.25, "arr": [0, 1, 2], "nan": "nan", "inf": "inf", "tup": [1, 2]}
    assert socket.gethostname() not in text
    with pytest.raises(TypeError):
        run.record(bad=object())


def test_bad_file_names_are_refused(tmp_path):
    run = ResultsDir("tiny", "05_example", {}, root=tmp_path)
    with pytest.raises(ValueError, match="^name:"):
        run.table("../escape", pd.DataFrame({"a": [1]}))


def test_atomic_write_leaves_old_content_when_replace_fails(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"], "no temporary file may be left behind"


def test_results_root_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARTAN_RESULTS", str(tmp_path))
    assert results_mod.results_root() == tmp_path
    assert ResultsDir("smoke", "x").path == tmp_path / "smoke" / "x"
    monkeypatch.delenv("SPARTAN_RESULTS")
    assert results_mod.results_root() == results_mod.REPO_ROOT / "results"
