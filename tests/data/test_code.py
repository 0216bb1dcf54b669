"""The standard-library code corpus: which files, the split by module, its identity, the copying curriculum."""

import pytest
import torch

from spartan_core.data import code


@pytest.fixture()
def fake_stdlib(tmp_path):
    files = {
        "os.py": "def join(a, b):\n    return a + b\n",
        "json/__init__.py": "def dumps(obj, indent, sort_keys):\n    pass\n",
        "json/decoder.py": "class D:\n    def decode(self, text, start):\n        pass\n",
        "json/tests/test_x.py": "x = 1\n",
        "test/support.py": "y = 2\n",
        "test_lonely.py": "z = 3\n",
        "site-packages/pkg.py": "w = 4\n",
        "idlelib/idle_test/t.py": "v = 5\n",
        "broken.py": "def f(:\n",
    }
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "latin1.py").write_bytes(b"s = '\xe9'\n")
    return tmp_path


def test_the_corpus_is_the_sorted_sources_without_tests_site_packages_or_undecodable_files(fake_stdlib):
    assert list(code.stdlib_files(fake_stdlib)) == ["broken.py", "json/__init__.py", "json/decoder.py", "os.py"]


def test_files_belong_to_their_top_level_module():
    assert code.module_of("email/mime/text.py") == "email"
    assert code.module_of("os.py") == "os"


def test_the_split_holds_out_whole_modules_and_does_not_depend_on_the_other_modules():
    real = code.stdlib_files()
    split = code.code_split(real, 10)
    train_modules = {code.module_of(r) for r in split["train"]}
    heldout_modules = {code.module_of(r) for r in split["validation"]}
    assert train_modules and heldout_modules and not train_modules & heldout_modules
    smaller = {r: p for i, (r, p) in enumerate(real.items()) if i % 2}
    for relative in code.code_split(smaller, 10)["validation"]:
        assert relative in split["validation"]
    with pytest.raises(ValueError, match="heldout_percent"):
        code.heldout_module("os", 0)


def test_the_corpus_identity_changes_with_a_file_the_split_and_names_the_python(fake_stdlib):
    percent = next(p for p in range(1, 100)
                   if len({code.heldout_module(m, p) for m in ("os", "json", "broken")}) == 2)
    first = code.corpus_identity(percent, fake_stdlib)
    assert first == code.corpus_identity(percent, fake_stdlib)
    assert first["python"].count(".") == 2 and sum(first["files"].values()) == 4
    (fake_stdlib / "os.py").write_text("def join(a, b, c):\n    return a\n")
    assert code.corpus_identity(percent, fake_stdlib)["sha256"] != first["sha256"]
    other = next(p for p in range(percent + 1, 100)
                 if code.code_split(code.stdlib_files(fake_stdlib), p) != code.code_split(
                     code.stdlib_files(fake_stdlib), percent) and
                 len({code.heldout_module(m, p) for m in ("os", "json", "broken")}) == 2)
    assert code.corpus_identity(other, fake_stdlib)["sha256"] != code.corpus_identity(percent, fake_stdlib)["sha256"]


def test_heldout_names_come_from_the_heldout_modules_only_and_skip_unparsable_files(fake_stdlib):
    percent = next(p for p in range(1, 100) if code.heldout_module("json", p) and not code.heldout_module("os", p))
    names = code.heldout_names(percent, fake_stdlib)
    assert names["functions"] == ["decode", "dumps"]
    assert names["arguments"] == ["indent", "obj", "sort_keys", "start", "text"]


def test_copy_blocks_score_only_what_the_previous_occurrence_predicts_and_vary_the_period():
    blocks = code.copy_blocks(64, 50, 300, low=3, seed=1)
    ids, labels = blocks["input_ids"], blocks["labels"]
    assert ids.shape == labels.shape == (64, 50) and int(ids.min()) >= 3
    periods = set()
    for row in range(len(ids)):
        scored = (labels[row] != -100).nonzero().flatten().tolist()
        assert scored, "every row scores some repeats"
        for t in scored:
            assert int(labels[row, t]) == int(ids[row, t])
            earlier = (ids[row, :t - 1] == ids[row, t - 1]).nonzero().flatten()
            assert len(earlier) == 1, "the context token occurred exactly once before"
            assert int(ids[row, int(earlier[0]) + 1]) == int(ids[row, t])
            periods.add(t - int(earlier[0]) - 1)
    assert len(periods) > 5
    again = code.copy_blocks(64, 50, 300, low=3, seed=1)
    assert torch.equal(again["input_ids"], ids) and torch.equal(again["labels"], labels)
    assert not torch.equal(code.copy_blocks(64, 50, 300, low=3, seed=2)["input_ids"], ids)


def test_copy_blocks_make_up_the_asked_fraction_of_training_rows(tmp_path):
    blocks = {"input_ids": torch.arange(300).view(30, 10)}
    mixed = code.with_copy_blocks(blocks, 0.25, 400, seed=0, cache_dir=tmp_path)
    copies = (mixed["labels"] == -100).any(dim=1)
    assert len(mixed["input_ids"]) == 40 and int(copies.sum()) == 10
    assert torch.equal(mixed["labels"][~copies], mixed["input_ids"][~copies])
    assert torch.equal(code.with_copy_blocks(blocks, 0.0, 400)["input_ids"], blocks["input_ids"])
    with pytest.raises(ValueError, match="copy_fraction"):
        code.with_copy_blocks(blocks, 1.0, 400)
    again = code.with_copy_blocks(blocks, 0.25, 400, seed=0, cache_dir=tmp_path)
    assert list((tmp_path / "tokens").glob("copy-*.safetensors")) and torch.equal(again["labels"], mixed["labels"])
