"""The plan a profile prints before any training: runs, reuse, time from measurements, memory, hub stop."""

import json

import pytest

from companion import plan, runner
from companion.params import load_profile


def test_the_tiny_plan_lists_each_run_once_and_says_what_is_reused():
    runs = plan.plan_profile("tiny", load_profile("tiny"), cuda=False, models_dir=None)
    by = {(r.notebook, r.model, r.what): r for r in runs}
    first = by[("02_sparsity_loss_curves", "addition-4l", "GECO post-training")]
    assert (first.runs, first.steps, first.reused_from) == (3, 4000, None)
    assert by[("05_addition", "addition-4l", "post-training")].reused_from == "02_sparsity_loss_curves"
    assert by[("03_edges_and_loss", "python-lm", "pretraining")].steps == 12000
    policies = by[("07_baselines", "shakespeare-lm", "fixed-policy fine-tunes")]
    assert (policies.runs, policies.steps, policies.reused_from) == (25, 150, None)
    assert all(r.memory_gib is not None and 0 < r.memory_gib < 1 for r in runs)
    head = plan.plan_lines("tiny", runs, published=0)[0]
    assert head.startswith(f"plan (tiny): {sum(r.runs for r in runs if not r.reused_from)} training runs")


def test_cpu_times_come_from_the_published_runs(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    call = {"fn": "load_sparse", "name": "addition-4l", "recipe": {"steps": 4000, "floor_steps": 0}}
    (folder / "manifest.json").write_text(json.dumps({"profile": "tiny", "files": {}, "models": [
        {"model": "addition-4l", "kind": "sparse", "call": call, "train_wall_time_s": 400.0}]}))
    runs = plan.plan_profile("tiny", {"05_addition": load_profile("tiny")["05_addition"]}, cuda=False,
                             models_dir=tmp_path)
    post = next(r for r in runs if r.what == "post-training")
    assert post.seconds_per_step == pytest.approx(0.1) and post.seconds == pytest.approx(3 * 400.0)
    assert next(r for r in runs if r.what == "pretraining").seconds is None  # no published dense run
    assert "unknown" in plan.plan_lines("tiny", runs, 0)[0] and "1200" not in plan.plan_lines("tiny", runs, 0)[0]


def test_gpu_times_scale_the_measured_tokens_per_second(tmp_path):
    gpu = tmp_path / "benchmarks" / "gpu_check"
    gpu.mkdir(parents=True)
    steps = {"gpt2-small": {"sparse": {"parameters": 124_000_000, "tokens_per_s": 100_000.0}}}
    (gpu / "metrics.json").write_text(json.dumps({"metrics": {"steps": steps}}))
    runs = plan.plan_profile("tiny", {"08_explorer": load_profile("tiny")["08_explorer"]}, cuda=True, root=tmp_path)
    post = next(r for r in runs if r.what == "post-training")
    # a smaller model runs proportionally more tokens per second than the measured one
    assert 0 < post.seconds_per_step < 128 * 128 / 100_000.0
    assert all(r.seconds_per_step is None for r in
               plan.plan_profile("tiny", {"08_explorer": load_profile("tiny")["08_explorer"]}, cuda=True,
                                 root=tmp_path / "nothing-measured"))


def test_a_profile_whose_hub_model_is_missing_offline_stops_in_one_line(monkeypatch, tmp_path, capsys):
    import papermill

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("SPARTAN_ALLOW_CPU", "1")
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("a kernel was started"))
    assert runner.main(["--profile", "gpu", "--only", "04_attention_patterns"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model 'gpt2': its config is not in the local Hugging Face cache") and \
        err.count("\n") == 1, err
