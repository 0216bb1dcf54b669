import hashlib
import json

import pytest
import torch

from conftest import tiny_gpt2
from spartan_core.cli import main


@pytest.mark.parametrize("argv, name", [
    (["post-train", "--model", "no-such-model", "--out", "OUT"], "model"),
    (["post-train", "--model", "addition-4l", "--out", "OUT", "--steps", "-2"], "steps"),
    (["post-train", "--model", "addition-4l", "--out", "OUT", "--tau", "0"], "tau"),
    (["post-train", "--model", "addition-4l", "--out", "OUT", "--tau", "-1.5"], "tau"),
    (["post-train", "--model", "addition-4l", "--out", "OUT", "--data", "/no/such/file.txt"], "data"),
    (["post-train", "--model", "addition-4l", "--out", "OUT", "--device", "cuda:7"], "device"),
    (["count-edges", "--model", "addition-4l", "--batch-size", "0"], "batch-size"),
])
def test_bad_values_are_refused_before_anything_is_written(argv, name, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [str(out) if a == "OUT" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        code = main(argv)
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{name}:" in err
    assert not out.exists()


def test_help_lists_both_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "post-train" in text and "count-edges" in text


def test_post_train_then_count_edges_end_to_end(local_model, tmp_path, capsys):
    model_dir, text = local_model
    out = tmp_path / "run"
    assert main(["post-train", "--model", str(model_dir), "--data", str(text), "--seq-len", "16", "--out", str(out),
                 "--steps", "4", "--batch-size", "4", "--eval-every", "2", "--checkpoint-every", "2",
                 "--tau-factor", "1.5", "--threads", "1", "--seed", "3", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["kept_fraction"] <= 1 and summary["tau"] == pytest.approx(1.5 * summary["dense_train_ce"])
    assert summary["weights_sha256"] == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    assert summary["seed"] == 3 and summary["trained_on"]["threads"] == 1
    assert len((out / "geco" / "log.jsonl").read_text().splitlines()) == 4
    capsys.readouterr()
    counts_file = tmp_path / "counts.json"
    assert main(["count-edges", "--model", str(model_dir), "--data", str(text), "--seq-len", "16",
                 "--checkpoint", str(out), "--json", str(counts_file)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["kept_fraction"] == pytest.approx(json.loads(counts_file.read_text())["kept_fraction"])


# ---- refusals of files and state, before the work (each names its parameter in one line) ----


def _refused(argv, name, capsys, code=2):
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exit_info:  # argparse's own refusals
        status = exit_info.code
    assert status == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{name}" in err, err
    return err


def _post_train_args(model_dir, text, out, *extra):
    return [str(a) for a in ["post-train", "--model", model_dir, "--data", text, "--seq-len", "16", "--out", out,
                             "--steps", "4", "--batch-size", "4", "--eval-every", "2", "--checkpoint-every", "2",
                             "--tau-factor", "1.5", "--no-progress", *extra]]


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"), (b"   \n\n", "is empty"), (b"abc\x00\x01\x02" * 50, "looks binary"),
    (b"caf\xe9 au lait " * 50, "is not UTF-8"),
])
def test_bad_data_files_are_one_line(local_model, tmp_path, capsys, content, message):
    model_dir, _ = local_model
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    err = _refused(_post_train_args(model_dir, bad, tmp_path / "run"), "data:", capsys)
    assert message in err and not (tmp_path / "run").exists()


def test_data_is_checked_against_a_toy_before_its_first_use_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPARTAN_CACHE", str(tmp_path / "cache"))
    words = tmp_path / "words.txt"
    words.write_text("no digits in here at all\n" * 50)
    digits = tmp_path / "sums.txt"
    digits.write_text("12+34=00046\n" * 50)
    out = tmp_path / "run"
    _refused(["post-train", "--model", "addition-4l", "--data", words, "--seq-len", "8", "--out", out], "data:", capsys)
    _refused(["post-train", "--model", "addition-4l", "--data", digits, "--out", out], "seq-len: 128 exceeds", capsys)
    _refused(["post-train", "--model", "addition-4l", "--data", digits, "--seq-len", "1", "--out", out], "seq-len:",
             capsys)
    assert not (tmp_path / "cache" / "models" / "addition-4l").exists(), "no first-use training before the refusal"
    assert not out.exists()


def test_unwritable_outputs_are_refused_before_the_work(local_model, tmp_path, capsys):
    model_dir, text = local_model
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    _refused(_post_train_args(model_dir, text, a_file / "run"), "out: cannot create", capsys)
    _refused(["count-edges", "--model", model_dir, "--data", text, "--seq-len", "16", "--json", a_file / "c.json"],
             "json: cannot create", capsys)


@pytest.mark.parametrize("argv, name", [
    (["--beta-init", "1000"], "beta-init"), (["--beta-init", "1e-7"], "beta-init"), (["--device", "mps"], "device"),
    (["--gate-bias", "nan"], "gate-bias"), (["--controller", "fixed", "--kp", "2"], "kp"),
    (["--policy", "topk", "--keys-per-query", "1.5"], "keys-per-query"), (["--policy", "window"], "keys-per-query"),
    (["--keys-per-query", "2"], "keys-per-query"),
])
def test_more_bad_values_are_one_line(local_model, tmp_path, capsys, argv, name):
    model_dir, text = local_model
    _refused(_post_train_args(model_dir, text, tmp_path / "run", *argv), f"{name}:", capsys)
    assert not (tmp_path / "run").exists()


def test_model_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _refused(["count-edges", "--model", tmp_path / "empty"], "model: ", capsys)
    err = _refused(["count-edges", "--model", "nobody-here/no-such-model"], "model: ", capsys)
    assert "not in the local Hugging Face cache" in err


def test_a_cache_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("SPARTAN_CACHE", str(tmp_path / "cache"))
    _refused(["count-edges", "--model", "addition-4l"], "SPARTAN_CACHE: ", capsys)


def test_count_edges_refuses_a_nan_model_and_a_wrong_architecture(local_model, tmp_path, capsys):
    from safetensors.torch import save_model

    model_dir, text = local_model
    args = ["count-edges", "--model", model_dir, "--data", text, "--seq-len", "16", "--checkpoint", tmp_path]
    poisoned = tiny_gpt2(vocab=50257, width=16, heads=2, positions=64)
    with torch.no_grad():
        poisoned.transformer.h[0].attn.c_attn.weight.fill_(float("nan"))
    save_model(poisoned, str(tmp_path / "model.safetensors"))
    _refused(args, "is not finite", capsys)
    save_model(tiny_gpt2(vocab=50257, width=32, heads=2, positions=64), str(tmp_path / "model.safetensors"))
    assert "does not fit this model" in _refused(args, "checkpoint: ", capsys)


def test_divergence_is_one_line_with_its_own_exit_code(local_model, tmp_path, capsys, monkeypatch):
    from spartan_core.training import TrainingDiverged

    def diverge(*args, **kwargs):
        raise TrainingDiverged("step 3: gradient norm is nan; the step was not applied.\nLast finite checkpoint: X.")

    monkeypatch.setattr("spartan_core.training.posttrain.train", diverge)
    model_dir, text = local_model
    err = _refused(_post_train_args(model_dir, text, tmp_path / "run"), "training diverged: step 3", capsys, code=3)
    assert "Last finite checkpoint" in err


# ---- a run directory knows what it holds ----


def test_a_rerun_into_the_same_out_refuses_other_settings_and_reuses_the_same(local_model, tmp_path, capsys):
    from safetensors.torch import load_file

    model_dir, text = local_model
    out = tmp_path / "run"
    assert main(_post_train_args(model_dir, text, out)) == 0
    first = json.loads((out / "summary.json").read_text())
    weights = load_file(out / "model.safetensors")
    capsys.readouterr()
    for change, named in ((["--seed", "1"], "recipe.seed"), (["--lr", "1e-3"], "recipe.lr"),
                          (["--tau-factor", "2"], "recipe.tau_factor"), (["--steps", "3"], "recipe.steps")):
        err = _refused(_post_train_args(model_dir, text, out, *change), f"out: {out} holds another run ({named}",
                       capsys)
        assert "--fresh" in err
    assert all(torch.equal(weights[k], v) for k, v in load_file(out / "model.safetensors").items())
    assert main(_post_train_args(model_dir, text, out)) == 0
    captured = capsys.readouterr()
    assert "already holds this finished run" in captured.err
    again = json.loads(captured.out)
    assert again["reused"] is True and again["kept_fraction"] == first["kept_fraction"]
    assert main(_post_train_args(model_dir, text, out, "--seed", "1", "--fresh")) == 0
    assert json.loads((out / "run.json").read_text())["recipe"]["seed"] == 1


def test_count_edges_loads_the_weights_post_train_reported(local_model, tmp_path, capsys):
    model_dir, text = local_model
    out = tmp_path / "run"
    assert main(_post_train_args(model_dir, text, out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    assert main(["count-edges", "--model", str(model_dir), "--data", str(text), "--seq-len", "16",
                 "--checkpoint", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["weights"].startswith(str(out / "model.safetensors"))
    assert summary["weights_are"] in printed["weights"]
    assert printed["kept_fraction"] == pytest.approx(summary["kept_fraction"])


def test_a_sigkilled_post_train_resumes_and_a_second_one_is_refused_meanwhile(local_model, tmp_path, capsys):
    import os
    import signal
    import subprocess
    import sys
    import time

    model_dir, text = local_model
    out = tmp_path / "run"
    argv = [str(a) for a in _post_train_args(model_dir, text, out)]
    argv[argv.index("--steps") + 1] = "80"
    argv[argv.index("--checkpoint-every") + 1] = "5"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    running = subprocess.Popen([sys.executable, "-m", "spartan_core", *argv], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (out / "geco" / "checkpoint" / "trainer.json").exists():
            assert running.poll() is None and time.time() < deadline, running.stderr.read().decode()
            time.sleep(0.2)
        _refused(argv, "another process", capsys)
    finally:
        running.send_signal(signal.SIGKILL)
        running.wait()
    killed_at = json.loads((out / "geco" / "checkpoint" / "trainer.json").read_text())["step"]
    assert killed_at < 80 and not (out / "summary.json").exists()
    assert main(argv) == 0
    steps = [json.loads(line)["step"] for line in (out / "geco" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 81))
