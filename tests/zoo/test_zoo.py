"""The model registry: toy models trained once and cached, sparse variants, SmolLM2 and hub names."""

import importlib
import time

import pytest
import torch

from spartan_core import zoo
from spartan_core.training import SparseRecipe
from spartan_core.mechanism.sparsify import is_sparse

train_module = importlib.import_module("spartan_core.training.loop")
TINY = dict(steps=3, batch_size=16, eval_batch_size=500)
TINY_SPARSE = dict(steps=3, batch_size=16, eval_every=0, eval_batch_size=500, eval_max_batches=1)


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def _refuse_training(*args, **kwargs):
    raise AssertionError("train() was called although the model is cached")


def test_toy_is_trained_once_then_reloaded_from_the_cache(cache, monkeypatch):
    first = zoo.load("addition-4l", cache_dir=cache, progress=False, **TINY)
    assert first.info["trained_now"] and first.model.config.n_layer == 4 and first.model.config.n_embd == 64
    assert len(first.history) == 3 and set(first.data) == {"train", "test"}
    assert "exact_match" in first.info["metrics"] and first.info["heldout_split"] == "test"
    monkeypatch.setattr(train_module, "train", _refuse_training)
    again = zoo.load("addition-4l", cache_dir=cache, progress=False, **TINY)
    assert not again.info["trained_now"] and again.info["cache_dir"] == first.info["cache_dir"]
    for (name, a), b in zip(first.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu()), name
    with pytest.raises(AssertionError, match="cached"):
        zoo.load("addition-4l", cache_dir=cache, progress=False, **{**TINY, "steps": 4})


def test_overrides_are_checked_and_change_the_key(cache):
    with pytest.raises(ValueError, match="^colour:"):
        zoo.load("addition-4l", cache_dir=cache, colour="red")
    small = zoo.load("addition-4l", cache_dir=cache, progress=False, n_layer=1, **TINY)
    assert small.model.config.n_layer == 1 and "/addition-4l/" in small.info["cache_dir"]
    assert small.info["recipe"]["architecture"]["n_layer"] == 1


def test_sparse_variant_is_post_trained_cached_and_sparsified(cache, monkeypatch):
    loaded = zoo.load_sparse("addition-4l", TINY_SPARSE, cache_dir=cache, progress=False, dense_overrides=TINY)
    assert loaded.info["trained_now"] and is_sparse(loaded.model)
    assert [r["phase"] for r in loaded.history] == ["geco"] * 3
    assert {"tau", "beta", "log_beta", "ce_ema", "expected_fraction"} <= set(loaded.history[0])
    assert loaded.info["tau"] == pytest.approx(3.0 * loaded.info["dense_train_ce"])
    sparse_metrics = loaded.info["metrics"]["sparse"]
    assert 0.0 <= sparse_metrics["kept_fraction"] <= 1.0 and "exact_match" in sparse_metrics
    monkeypatch.setattr(train_module, "train", _refuse_training)
    again = zoo.load_sparse("addition-4l", TINY_SPARSE, cache_dir=cache, progress=False, dense_overrides=TINY)
    assert not again.info["trained_now"] and is_sparse(again.model) and len(again.history) == 3


def test_the_dense_control_is_cached_beside_the_sparse_copy_and_loads_dense(cache):
    sparse = zoo.load_sparse("addition-4l", TINY_SPARSE, cache_dir=cache, progress=False, dense_overrides=TINY)
    control = zoo.load_sparse("addition-4l", {**TINY_SPARSE, "policy": "dense"}, cache_dir=cache, progress=False,
                              dense_overrides=TINY)
    assert control.run.is_control and not is_sparse(control.model) and control.run.after.edges is None
    assert control.info["key"] != sparse.info["key"] and control.run.dense == sparse.run.dense
    assert "exact_match" in control.info["metrics"]["sparse"]


def test_floor_phase_sets_tau_from_the_sampled_mask_loss(cache):
    recipe = {**TINY_SPARSE, "tau_reference": "floor", "floor_steps": 2, "tau_factor": 1.5}
    loaded = zoo.load_sparse("addition-4l", recipe, cache_dir=cache, progress=False, dense_overrides=TINY)
    assert [r["phase"] for r in loaded.history] == ["floor", "floor", "geco", "geco", "geco"]
    assert [r["step"] for r in loaded.history] == [1, 2, 3, 4, 5]
    assert loaded.info["tau"] == pytest.approx(1.5 * loaded.info["floor_ce"])


def test_training_here_gives_the_same_model_whatever_the_global_random_state(tmp_path):
    runs = []
    for attempt in range(2):
        torch.manual_seed(1000 + attempt)  # whatever the caller did before must not matter
        runs.append(zoo.load_sparse("addition-4l", TINY_SPARSE, cache_dir=tmp_path / str(attempt),
                                       progress=False, dense_overrides=TINY))
    first, second = (run.model.state_dict() for run in runs)
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert [r["ce"] for r in runs[0].history] == [r["ce"] for r in runs[1].history]


def test_a_seed_and_thread_count_give_one_weight_hash_and_the_provenance_names_them(tmp_path):
    def dense(folder, **changes):
        return zoo.load("addition-4l", cache_dir=tmp_path / folder, progress=False, **{**TINY, **changes})

    def sparse(folder, seed):
        return zoo.load_sparse("addition-4l", {**TINY_SPARSE, "seed": seed}, cache_dir=tmp_path / folder,
                               progress=False, dense_overrides={**TINY, "seed": seed})

    first, again, other = dense("a"), dense("b"), dense("a", seed=1)
    assert first.provenance["weights_sha256"] == again.provenance["weights_sha256"]
    assert other.provenance["weights_sha256"] != first.provenance["weights_sha256"]
    assert (first.provenance["seed"], other.provenance["seed"]) == (0, 1)
    assert first.provenance["threads"] == zoo.registry.TOY_THREADS and first.provenance["device"] == "cpu"
    assert first.provenance["device_name"] and first.provenance["torch"] == torch.__version__
    assert sparse("a", 0).provenance["weights_sha256"] == sparse("b", 0).provenance["weights_sha256"]
    seeded = sparse("a", 1).provenance
    assert seeded["kind"] == "sparse" and seeded["seed"] == 1
    assert seeded["weights_sha256"] != sparse("a", 0).provenance["weights_sha256"]
    before = torch.get_num_threads()
    one = dense("a", threads=1)
    assert one.provenance["threads"] == 1 and one.info["cache_dir"] != first.info["cache_dir"]
    assert torch.get_num_threads() == before  # the training's thread count is not left behind
    used = [m["weights_sha256"] for m in zoo.used_models()]
    assert first.provenance["weights_sha256"] in used and seeded["weights_sha256"] in used


def test_tau_min_is_a_floor_under_a_relative_tau(cache):
    loaded = zoo.load_sparse("addition-4l", {**TINY_SPARSE, "tau_min": 50.0}, cache_dir=cache, progress=False,
                                dense_overrides=TINY)
    assert 3.0 * loaded.info["dense_train_ce"] < 50.0 and loaded.info["tau"] == 50.0


def test_sparse_recipe_refuses_bad_settings():
    with pytest.raises(ValueError, match="^tau_min:"):
        SparseRecipe(tau_min=-0.1)
    with pytest.raises(ValueError, match="^tau_reference:"):
        SparseRecipe(tau_reference="median")
    with pytest.raises(ValueError, match="^floor_steps:"):
        SparseRecipe(tau_reference="floor", floor_steps=0)
    with pytest.raises(ValueError, match="^warmth:"):
        zoo.load_sparse("addition-4l", {"warmth": 1})
    assert zoo.default_sparse_recipe("addition-4l").tau_factor == 3.0


def test_hub_name_offline_fails_fast_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(zoo.HubUnavailableError) as err:
        zoo.load("spartan-tests/no-such-model")
    assert time.perf_counter() - started < 10
    message = str(err.value)
    assert "\n" not in message and "spartan-tests/no-such-model" in message and "HF_HUB_OFFLINE" in message


def test_local_directory_loads_like_a_hub_name(tmp_path):
    from conftest import tiny_gpt2

    from spartan_core.data import addition

    folder = tmp_path / "tiny"
    tiny_gpt2(vocab=addition.VOCAB_SIZE).save_pretrained(folder)
    addition.tokenizer().save_pretrained(folder)
    loaded = zoo.load(str(folder))
    assert loaded.model.config.vocab_size == addition.VOCAB_SIZE
    assert loaded.tokenizer("12+34=")["input_ids"] == addition.encode("12+34=")


def test_smollm2_gguf_is_found_in_its_package():
    from spartan_core.zoo.smollm2 import _smollm2_gguf

    folder, name = _smollm2_gguf()
    assert (folder / name).is_file() and name.endswith(".gguf")
    assert "smollm2-135m" in zoo.available()


def test_a_corrupt_cache_entry_is_named_with_what_to_delete(cache):
    from pathlib import Path

    entry = Path(zoo.load("addition-4l", cache_dir=cache, progress=False, **TINY).info["cache_dir"])
    weights = entry / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one flipped bit in the last weight
    weights.write_bytes(bytes(data))
    with pytest.raises(zoo.CacheCorrupt, match=f"^cache: {entry}/model.safetensors does not match its checksum.*"
                                                  f"delete {entry}"):
        zoo.load("addition-4l", cache_dir=cache, progress=False, **TINY)
    (entry / "info.json").write_text("{torn")
    with pytest.raises(zoo.CacheCorrupt, match=f"^cache: {entry}/info.json is unreadable"):
        zoo.load("addition-4l", cache_dir=cache, progress=False, **TINY)


def test_first_use_training_checkpoints_by_wall_time(cache, monkeypatch):
    seen = []
    real_train = train_module.train

    def spy(model, data, *, config, **kwargs):
        seen.append(config)
        return real_train(model, data, config=config, **kwargs)

    monkeypatch.setattr(train_module, "train", spy)
    monkeypatch.setattr("spartan_core.training.posttrain.train", spy)
    zoo.load("addition-4l", cache_dir=cache, progress=False, **TINY)
    zoo.load_sparse("addition-4l", TINY_SPARSE, cache_dir=cache, progress=False, dense_overrides=TINY)
    assert len(seen) == 2 and all(c.checkpoint_seconds == 120 for c in seen)


def test_a_cache_directory_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="^SPARTAN_CACHE: .* is a file"):
        zoo.load("addition-4l", cache_dir=tmp_path / "file", progress=False, **TINY)


def test_the_code_model_keys_its_cache_and_provenance_by_the_corpus_and_holds_out_modules(cache, monkeypatch):
    from spartan_core.data import code

    loaded = zoo.load("python-lm", cache_dir=cache, progress=False, steps=2, batch_size=4, eval_batch_size=64,
                      n_embd=32, vocab_size=300)
    corpus = code.corpus_identity(10)
    assert loaded.info["recipe"]["dataset"]["corpus"] == corpus == loaded.info["dataset"]["corpus"]
    assert loaded.provenance["corpus_sha256"] == corpus["sha256"]
    assert set(loaded.data) == {"train", "validation", "train_code"} and loaded.info["heldout_split"] == "validation"
    mixed, own = loaded.data["train"], loaded.data["train_code"]
    copies = (mixed["labels"] == -100).any(dim=1)
    assert int(copies.sum()) == len(own["input_ids"]) == int((~copies).sum())  # copy_fraction 0.5
    card = loaded.info["metrics"]
    assert {"heldout_ce", "train_ce_sample", "bigram"} <= set(card) and card["bigram"]["ce"] > 0
    other = dict(corpus, sha256="0" * 64)
    monkeypatch.setattr(importlib.import_module("spartan_core.zoo.registry"), "corpus_identity",
                        lambda percent, root=None: other)
    monkeypatch.setattr(train_module, "train", _refuse_training)
    with pytest.raises(AssertionError, match="cached"):
        zoo.load("python-lm", cache_dir=cache, progress=False, steps=2, batch_size=4, eval_batch_size=64,
                 n_embd=32, vocab_size=300)


def test_a_built_entry_is_read_without_touching_its_lock_file(cache, monkeypatch):
    """A complete cache works read-only: loading a built entry opens no lock file for writing."""
    first = zoo.load_sparse("addition-4l", TINY_SPARSE, cache_dir=cache, progress=False, dense_overrides=TINY)
    locks = sorted(cache.rglob("*.lock"))
    assert locks
    for lock in locks:
        lock.unlink()

    def refuse(path):
        raise PermissionError(f"read-only: {path}")

    monkeypatch.setattr(zoo.cache, "open_lock", refuse)
    again = zoo.load_sparse("addition-4l", TINY_SPARSE, cache_dir=cache, progress=False, dense_overrides=TINY)
    assert again.provenance["weights_sha256"] == first.provenance["weights_sha256"] and not again.info["trained_now"]
    assert not list(cache.rglob("*.lock"))


def test_a_symbolic_link_planted_at_a_lock_name_is_refused_and_its_target_untouched(cache, tmp_path):
    from spartan_core.zoo.cache import config_hash, locked

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    final = cache / "models" / "x" / config_hash({"a": 1})
    final.parent.mkdir(parents=True)
    final.with_name(final.name + ".lock").symlink_to(victim)
    with pytest.raises(ValueError, match=r"\.lock: is a symbolic link; a lock file must be a plain file"):
        with locked(final):
            pass
    assert victim.read_text() == "precious"
