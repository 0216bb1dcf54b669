"""The results writer: atomic files, key-by-key merge, provenance, one run per folder, swapped in when finished.
(Killed and concurrent runs: tests/companion/test_runner_safety.py.)"""

import json
import math
import os
import socket

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from companion import results as results_mod  # noqa: E402
from spartan_core.claims import Claim
from companion.results import ResultsDir, read_metrics  # noqa: E402
from spartan_core._util import atomic_write_text  # noqa: E402


def test_nothing_is_written_before_the_first_result(tmp_path):
    ResultsDir("smoke", "01_example", {"seed": 0}, root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_metrics_merge_key_by_key_and_keep_provenance(tmp_path):
    run = ResultsDir("tiny", "01_example", {"seed": 3, "lr": 1e-3}, root=tmp_path)
    run.record(a=1, nested={"x": 1.5})
    run.record(b=[1, 2], a=2)
    data = read_metrics(tmp_path / "tiny" / ".staging" / "01_example")
    assert data["metrics"] == {"a": 2, "nested": {"x": 1.5}, "b": [1, 2]}
    prov = data["provenance"]
    assert prov["profile"] == "tiny" and prov["notebook"] == "01_example"
    assert prov["parameters"] == {"seed": 3, "lr": 1e-3}
    assert prov["status"] == "running"
    assert set(prov["versions"]) >= {"python", "torch", "transformers"}
    assert prov["device"]["type"] in ("cpu", "cuda")
    assert len(prov["git_commit"]) == 40 and isinstance(prov["git_dirty"], bool)
    assert prov["wall_time_s"] >= 0 and prov["started_utc"].endswith("+00:00")


def test_unfinished_run_keeps_what_it_wrote_in_staging_and_finish_puts_it_in_place(tmp_path):
    run = ResultsDir("tiny", "02_example", {}, root=tmp_path)
    run.record(step_100=0.5)
    del run  # a killed run never calls finish()
    data = read_metrics(tmp_path / "tiny" / ".staging" / "02_example")
    assert data["metrics"] == {"step_100": 0.5} and data["provenance"]["status"] == "running"
    assert not (tmp_path / "tiny" / "02_example").exists(), "only a finished run is published"

    again = ResultsDir("tiny", "02_example", {}, root=tmp_path)
    again.record(final=1.0)
    done = again.finish()
    assert done["provenance"]["status"] == "complete" and "finished_utc" in done["provenance"]
    assert done["metrics"] == {"final": 1.0}, "a new run must not mix in the previous run's keys"
    assert read_metrics(again.path) == done
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == [".02_example.lock", "02_example"], \
        "the emptied staging folder goes too"
    with pytest.raises(RuntimeError, match=r"^results: this run of .*02_example is finished; "):
        again.record(late=1)


def test_tables_figures_claims_and_stale_files(tmp_path):
    run = ResultsDir("tiny", "03_example", {}, root=tmp_path)
    folder = tmp_path / "tiny" / "03_example"
    folder.mkdir(parents=True)
    (folder / "old_figure.png").write_bytes(b"stale")
    (folder / "notes.txt").write_text("left by hand")
    assert run.table("curve", pd.DataFrame({"step": [0, 1], "ce": [2.0, 1.5]})).parent == run.staging_path
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    run.figure(fig, "curve")
    plt.close(fig)
    run.claim(Claim("edges_kept", "kept 1.0 % of edges", {"kept_fraction": 0.01}))
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "old_figure.png"], "untouched until finish"
    run.finish()
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["curve.csv", "curve.png", "metrics.json"], "a finished run replaces the whole folder"
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
    text = run.metrics_path.read_text()
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


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _complete_run(root, notebook="06_example", **metrics):
    run = ResultsDir("tiny", notebook, {"seed": 0}, root=root)
    run.record(**metrics)
    run.table("curve", pd.DataFrame({"step": [0, 1], "ce": [2.0, 1.5]}))
    run.claim(Claim("edges_kept", "kept 1 % of edges", {"kept_fraction": 0.01}))
    run.finish()
    return run


def test_a_rerun_that_raises_before_finish_leaves_the_old_results_byte_identical(tmp_path):
    _complete_run(tmp_path, loss=0.5)
    before = _snapshot(tmp_path / "tiny" / "06_example")

    def failing_rerun():
        run = ResultsDir("tiny", "06_example", {"seed": 1}, root=tmp_path)
        run.record(loss=9.0)
        run.table("other", pd.DataFrame({"a": [1]}))
        raise RuntimeError("training diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        failing_rerun()
    assert _snapshot(tmp_path / "tiny" / "06_example") == before


def test_a_finished_rerun_replaces_the_folder_and_leaves_nothing_of_the_old_run(tmp_path):
    _complete_run(tmp_path, loss=0.5)
    folder = tmp_path / "tiny" / "06_example"
    (folder / "notes.txt").write_text("left in the old folder by hand")
    before = _snapshot(folder)
    rerun = ResultsDir("tiny", "06_example", {"seed": 1}, root=tmp_path)
    rerun.record(other=2.0)
    rerun.table("other", pd.DataFrame({"a": [1]}))
    assert _snapshot(folder) == before, "readers see the old complete run until the new one finishes"
    done = rerun.finish()
    assert sorted(_snapshot(folder)) == ["metrics.json", "other.csv"]
    assert done["metrics"] == {"other": 2.0} and done["claims"] == {} and done["files"] == ["other.csv"]
    assert not (tmp_path / "tiny" / ".staging").exists()


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("b")
    if not results_mod._exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    assert (tmp_path / "a" / "x").read_text() == "b" and (tmp_path / "b" / "x").read_text() == "a"


def test_without_renameat2_the_fallback_swap_replaces_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(results_mod, "_exchange", lambda a, b: False)
    _complete_run(tmp_path, loss=0.5)
    _complete_run(tmp_path, loss=0.25)
    assert read_metrics(tmp_path / "tiny" / "06_example")["metrics"] == {"loss": 0.25}
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == [".06_example.lock", "06_example"]


def test_the_next_run_restores_a_folder_a_death_inside_the_fallback_swap_parked(tmp_path):
    _complete_run(tmp_path, loss=0.5)
    folder = tmp_path / "tiny" / "06_example"
    before = _snapshot(folder)
    parked = tmp_path / "tiny" / ".staging" / "06_example.old"
    parked.parent.mkdir()
    os.rename(folder, parked)  # the fallback's first rename; the process died before the second
    ResultsDir("tiny", "06_example", {}, root=tmp_path).record(loss=1.0)
    assert _snapshot(folder) == before and not parked.exists()


def test_a_rerun_in_the_same_process_takes_over_from_an_abandoned_run(tmp_path):
    abandoned = ResultsDir("tiny", "06_example", {}, root=tmp_path)
    abandoned.record(loss=9.0)  # e.g. kept alive by the traceback of a failed notebook cell
    rerun = ResultsDir("tiny", "06_example", {}, root=tmp_path)
    rerun.record(loss=0.5)
    with pytest.raises(RuntimeError, match=r"^results: this run of .*06_example was taken over by a newer run"):
        abandoned.record(loss=8.0)
    assert rerun.finish()["metrics"] == {"loss": 0.5}


def test_a_symbolic_link_planted_at_the_results_lock_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / ".05_addition.lock").symlink_to(victim)
    with pytest.raises(ValueError, match="is a symbolic link"):
        results_mod.ResultsLock("tiny", "05_addition", tmp_path).acquire()
    assert victim.read_text() == "precious"
