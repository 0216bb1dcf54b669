import json

import pytest

from conftest import tiny_gpt2
from spartan_core.cli import main


@pytest.fixture(scope="module")
def local_model(tmp_path_factory):
    """A tiny GPT-2 with the real GPT-2 BPE, saved as a local model directory."""
    from spartan_core.data.tokenizers import gpt2_tokenizer

    path = tmp_path_factory.mktemp("model")
    tiny_gpt2(vocab=50257, width=16, heads=2, positions=64).save_pretrained(path)
    gpt2_tokenizer().save_pretrained(path)
    text = tmp_path_factory.mktemp("text") / "plays.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 40)
    return path, text


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
                 "--tau-factor", "1.5", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["kept_fraction"] <= 1 and summary["tau"] == pytest.approx(1.5 * summary["dense_eval_ce"])
    assert len((out / "log.jsonl").read_text().splitlines()) == 4
    capsys.readouterr()
    counts_file = tmp_path / "counts.json"
    assert main(["count-edges", "--model", str(model_dir), "--data", str(text), "--seq-len", "16",
                 "--checkpoint", str(out), "--json", str(counts_file)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["kept_fraction"] == pytest.approx(json.loads(counts_file.read_text())["kept_fraction"])
