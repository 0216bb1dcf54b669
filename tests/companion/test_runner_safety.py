"""Runs that die or overlap never damage results: a SIGKILLed rerun leaves the previous results byte-identical,
one run per results folder at a time (also across the runner and its kernel), and the paper profile refuses a
machine without CUDA unless forced."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager

import nbformat
import pytest

from companion import runner
from spartan_core.claims import Claim
from companion.results import LOCK_HELD_ENV, ResultsBusy, ResultsDir, ResultsLock, read_metrics

# The children need only companion.results (which imports no torch: spartan_core's exports load lazily).
PRELUDE = textwrap.dedent("""
    import sys, time
    from companion import results
""")


@contextmanager
def _child(code, root):
    """A Python process running ``code`` that prints ``ready`` once it holds what it should; SIGKILLed on exit."""
    env = {**os.environ, "SPARTAN_RESULTS": str(root)}
    env.pop(LOCK_HELD_ENV, None)
    proc = subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=runner.REPO_ROOT)
    try:
        line = proc.stdout.readline()
        assert line == "ready\n", proc.stderr.read() if proc.poll() is not None else line
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _first_run(root, notebook):
    run = ResultsDir("tiny", notebook, {"seed": 0}, root=root)
    run.record(loss=0.5)
    run.claim(Claim("edges_kept", "kept 1 % of edges", {"kept_fraction": 0.01}))
    run.finish()
    return _snapshot(root / "tiny" / notebook)


HOLD_A_RUN = """
    run = results.ResultsDir("tiny", "07_race", {"seed": 1})
    run.record(loss=9.0)
    print("ready", flush=True)
    time.sleep(120)
"""

HOLD_THE_LOCK = """
    lock = results.ResultsLock("{profile}", "{notebook}").acquire()
    print("ready", flush=True)
    time.sleep(120)
"""


def test_sigkilled_rerun_leaves_the_previous_results_byte_identical(tmp_path):
    before = _first_run(tmp_path, "07_race")
    with _child(HOLD_A_RUN, tmp_path) as proc:
        staged = read_metrics(tmp_path / "tiny" / ".staging" / "07_race")
        assert staged["metrics"] == {"loss": 9.0} and staged["provenance"]["status"] == "running"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    assert _snapshot(tmp_path / "tiny" / "07_race") == before, "a killed rerun must not touch the last results"
    again = ResultsDir("tiny", "07_race", {}, root=tmp_path)
    again.record(loss=0.25)  # the dead run's lock is gone with it
    assert read_metrics(again.staging_path)["metrics"] == {"loss": 0.25}, "its leftovers are cleared"


def test_a_second_writer_in_another_process_is_refused_in_one_line(tmp_path):
    with _child(HOLD_A_RUN, tmp_path) as proc:
        second = ResultsDir("tiny", "07_race", {}, root=tmp_path)
        with pytest.raises(ResultsBusy) as error:
            second.record(loss=1.0)
        message = str(error.value)
        assert message == (f"results: another run is writing {tmp_path / 'tiny' / '07_race'} (pid {proc.pid}); "
                           "wait for it or stop it")
        assert read_metrics(tmp_path / "tiny" / ".staging" / "07_race")["metrics"] == {"loss": 9.0}, \
            "the refused run must not touch the running one's files"


def test_finish_releases_the_lock_for_other_processes(tmp_path):
    run = ResultsDir("tiny", "07_race", {}, root=tmp_path)
    run.record(loss=0.5)
    run.finish()
    with _child(HOLD_A_RUN, tmp_path):
        pass  # _child asserts that the other process began its run
    assert run.notebook == "07_race", "the finished run is still alive: finish() itself released the lock"


def test_the_kernel_of_a_runner_that_holds_the_lock_writes_without_taking_it(tmp_path, monkeypatch):
    with _child(HOLD_THE_LOCK.format(profile="tiny", notebook="07_race"), tmp_path):
        monkeypatch.setenv(LOCK_HELD_ENV, "tiny/07_race")
        run = ResultsDir("tiny", "07_race", {}, root=tmp_path)
        run.record(loss=1.0)
        run.finish()
        monkeypatch.setenv(LOCK_HELD_ENV, "tiny/08_other")
        with pytest.raises(ResultsBusy):
            ResultsDir("tiny", "07_race", {}, root=tmp_path).record(loss=2.0)
    assert read_metrics(tmp_path / "tiny" / "07_race")["metrics"] == {"loss": 1.0}




def _folders_in(tmp_path):
    """The results directly in ``tmp_path``, the executed notebooks and chapters in folders of it."""
    return runner.Folders(executed=tmp_path / "executed", chapters=tmp_path / "chapters", results=tmp_path)


def _no_kernel(*args, **kwargs):
    raise AssertionError("a kernel was started")


def test_runner_refuses_fast_while_another_run_holds_the_folder(tmp_path, monkeypatch, capsys):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", _no_kernel)
    monkeypatch.setenv("SPARTAN_RESULTS", str(tmp_path))
    monkeypatch.setattr(runner, "BOOK_DIR", tmp_path / "book")
    with _child(HOLD_THE_LOCK.format(profile="smoke", notebook="01_gated_attention"), tmp_path) as proc:
        started = time.monotonic()
        with pytest.raises(ResultsBusy, match=rf"^results: another run is writing .*smoke/01_gated_attention "
                                              rf"\(pid {proc.pid}\); wait for it or stop it$"):
            runner.run_notebook("01_gated_attention", "smoke", folders=_folders_in(tmp_path))
        assert time.monotonic() - started < 2, "the lock is checked before any work"
        assert runner.main(["--profile", "smoke", "--only", "01_gated_attention"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: results: another run is writing ") and err.count("\n") == 1, err
    assert not (tmp_path / "executed").exists() and not (tmp_path / "book").exists()


def _fake_kernel(check):
    """Stands in for papermill: runs ``check`` where the kernel would run, then writes the executed notebook."""

    def execute(source, output, **kwargs):
        check(kwargs["parameters"])
        nbformat.write(nbformat.read(source, as_version=4), output)

    return execute


def test_runner_holds_the_lock_over_kernel_executed_notebook_and_chapter(tmp_path, monkeypatch):
    import papermill

    seen = []

    def kernel(parameters):
        assert os.environ[LOCK_HELD_ENV] == "smoke/01_gated_attention"
        assert os.environ["SPARTAN_RESULTS"] == str(tmp_path.resolve())
        with pytest.raises(ResultsBusy):
            ResultsLock("smoke", "01_gated_attention", tmp_path).acquire()
        run = ResultsDir("smoke", "01_gated_attention", parameters)  # what the notebook's start() makes
        run.record(loss=1.0)
        run.finish()
        seen.append(parameters["profile"])

    def publish(executed, chapters_dir):
        with pytest.raises(ResultsBusy):
            ResultsLock("smoke", "01_gated_attention", tmp_path).acquire()
        seen.append("published")
        return chapters_dir / executed.name

    monkeypatch.setattr(papermill, "execute_notebook", _fake_kernel(kernel))
    monkeypatch.setattr(runner, "publish_chapter", publish)
    executed = runner.run_notebook("01_gated_attention", "smoke", folders=_folders_in(tmp_path), publish=True)
    assert seen == ["smoke", "published"] and executed.exists()
    assert LOCK_HELD_ENV not in os.environ
    assert read_metrics(tmp_path / "smoke" / "01_gated_attention")["provenance"]["status"] == "complete"
    ResultsLock("smoke", "01_gated_attention", tmp_path).acquire().release()  # released after the run


PAPER_REFUSAL = ("profile: paper needs a CUDA GPU (none found); pass --allow-cpu (or set SPARTAN_ALLOW_CPU=1) "
                 "to run it on this CPU anyway")


@pytest.fixture
def no_cuda(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("SPARTAN_ALLOW_CPU", raising=False)
    monkeypatch.setenv("SPARTAN_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(runner, "BOOK_DIR", tmp_path / "book")


def test_paper_profile_without_cuda_is_refused_before_anything_runs(tmp_path, monkeypatch, no_cuda, capsys):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", _no_kernel)
    with pytest.raises(ValueError) as error:
        runner.run_notebook("01_gated_attention", "paper", folders=runner.Folders(results=tmp_path / "results"))
    assert str(error.value) == PAPER_REFUSAL
    with pytest.raises(ValueError, match="^profile: paper needs a CUDA GPU"):
        runner.run_profile("paper", ["01_gated_attention"])
    assert runner.main(["--profile", "paper", "--only", "01_gated_attention"]) == 2
    assert capsys.readouterr().err == f"error: {PAPER_REFUSAL}\n"
    assert not (tmp_path / "results").exists() and not (tmp_path / "book").exists()


@pytest.mark.parametrize("how", ["argument", "environment", "command line"])
def test_a_forced_paper_run_on_cpu_reaches_the_kernel_with_the_permission(tmp_path, monkeypatch, no_cuda, how):
    import papermill

    seen = []

    def kernel(parameters):
        seen.append((parameters["profile"], os.environ.get("SPARTAN_ALLOW_CPU")))

    monkeypatch.setattr(papermill, "execute_notebook", _fake_kernel(kernel))
    monkeypatch.setattr(runner, "publish_chapter", lambda executed, chapters: chapters / executed.name)
    if how == "argument":
        runner.run_notebook("01_gated_attention", "paper", allow_cpu=True,
                            folders=runner.Folders(executed=tmp_path / "executed"))
    elif how == "environment":
        monkeypatch.setenv("SPARTAN_ALLOW_CPU", "1")
        runner.run_profile("paper", ["01_gated_attention"], folders=runner.Folders(executed=tmp_path / "executed"))
    else:
        assert runner.main(["--profile", "paper", "--only", "01_gated_attention", "--allow-cpu"]) == 0
    assert seen == [("paper", "1")], "the kernel's own check needs SPARTAN_ALLOW_CPU too"
