"""Published models: publish from the cache, verify and import into another cache, check numbers, retrain."""

import importlib
import json

import pytest

from companion import published as pub
from companion.results import REPO_ROOT
from spartan_core import zoo

train_module = importlib.import_module("spartan_core.training.loop")
TINY = dict(steps=3, batch_size=16, eval_batch_size=500)
TINY_SPARSE = dict(steps=3, batch_size=16, eval_every=0, eval_batch_size=500, eval_max_batches=1)


def _results(root, profile, notebook, loaded):
    folder = root / profile / notebook
    folder.mkdir(parents=True)
    models = [m.provenance for m in loaded]
    (folder / "metrics.json").write_text(json.dumps({"provenance": {"status": "complete", "models": models}}))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dense toy and two post-trained copies in one cache: one read with its weights, one only as a record."""
    base = tmp_path_factory.mktemp("published")
    cache = base / "cache"
    dense = zoo.load("addition-4l", cache_dir=cache, progress=False, **TINY)
    read = zoo.load_sparse("addition-4l", TINY_SPARSE, cache_dir=cache, progress=False, dense_overrides=TINY)
    record = zoo.load_sparse("addition-4l", {**TINY_SPARSE, "seed": 1}, cache_dir=cache, progress=False,
                             dense_overrides=TINY, weights=False)
    root = base / "results"
    _results(root, "tiny", "05_addition", [dense, read])
    _results(root, "tiny", "07_baselines", [dense, record])
    return base, cache, root, (dense, read, record)


@pytest.fixture
def published(trained, tmp_path):
    base, cache, root, loaded = trained
    manifest = pub.publish("tiny", cache_dir=cache, root=root, models_dir=tmp_path / "models")
    return manifest, tmp_path / "models", loaded


def test_publish_copies_weights_only_where_a_notebook_read_them(published):
    manifest, models, (dense, read, record) = published
    by_hash = {m.weights_sha256: m for m in manifest.models}
    assert set(by_hash) == {x.provenance["weights_sha256"] for x in (dense, read, record)}
    assert by_hash[dense.provenance["weights_sha256"]].notebooks == ("05_addition", "07_baselines")
    only_record = by_hash[record.provenance["weights_sha256"]]
    assert not only_record.weights and only_record.call["recipe"]["seed"] == 1
    assert not list((models / "tiny" / only_record.path).glob("*.safetensors"))
    assert (models / "tiny" / by_hash[read.provenance["weights_sha256"]].path / "model.safetensors").is_file()
    assert all(name.endswith((".json", ".jsonl", ".safetensors")) for name in manifest.files)
    assert pub.verify("tiny", models).models == manifest.models


def test_publishing_again_leaves_unchanged_models_untouched(published, trained):
    manifest, models, _ = published
    base, cache, root, _ = trained
    stamps = {p: p.stat().st_mtime_ns for p in (models / "tiny").rglob("*.safetensors")}
    again = pub.publish("tiny", cache_dir=cache, root=root, models_dir=models)
    assert again.files == manifest.files
    assert stamps == {p: p.stat().st_mtime_ns for p in (models / "tiny").rglob("*.safetensors")}


def test_republishing_a_changed_dense_entry_keeps_the_post_trained_copies_inside_it(published, trained):
    manifest, models, _ = published
    base, cache, root, _ = trained
    dense = next(m for m in manifest.models if m.kind == "dense")
    (models / "tiny" / dense.path / "evals.jsonl").write_text("{}\n")  # as if the cache entry had changed
    again = pub.publish("tiny", cache_dir=cache, root=root, models_dir=models)
    assert again.files == manifest.files and pub.verify("tiny", models).files == manifest.files


def test_import_fills_another_cache_that_then_trains_nothing(published, tmp_path, monkeypatch):
    manifest, models, (dense, read, record) = published
    other = tmp_path / "other-cache"
    report = pub.import_published("tiny", cache_dir=other, models_dir=models)
    assert len(report.imported) == 3 and not report.replaced
    monkeypatch.setattr(train_module, "train", lambda *a, **k: pytest.fail("trained although published"))
    again = zoo.load_sparse("addition-4l", TINY_SPARSE, cache_dir=other, progress=False, dense_overrides=TINY)
    assert again.provenance["weights_sha256"] == read.provenance["weights_sha256"]
    as_record = zoo.load_sparse("addition-4l", {**TINY_SPARSE, "seed": 1}, cache_dir=other, progress=False,
                                dense_overrides=TINY, weights=False)
    assert as_record.model is None and as_record.info["metrics"] == record.info["metrics"]
    assert len(pub.import_published("tiny", cache_dir=other, models_dir=models).present) == 3


def test_a_record_asked_for_its_weights_is_trained_again_to_the_same_hash(published, tmp_path):
    manifest, models, (dense, read, record) = published
    other = tmp_path / "other-cache"
    pub.import_published("tiny", cache_dir=other, models_dir=models)
    full = zoo.load_sparse("addition-4l", {**TINY_SPARSE, "seed": 1}, cache_dir=other, progress=False,
                           dense_overrides=TINY)
    assert full.info["trained_now"] and full.model is not None
    assert full.provenance["weights_sha256"] == record.provenance["weights_sha256"]


@pytest.mark.parametrize("damage", ["altered", "missing", "unlisted"])
def test_a_damaged_published_folder_is_refused_naming_the_file(published, tmp_path, damage):
    manifest, models, _ = published
    weights = next((models / "tiny").rglob("model.safetensors"))
    if damage == "altered":
        weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    elif damage == "missing":
        weights.unlink()
    else:
        weights = weights.with_name("notes.json")
        weights.write_text("{}")
    with pytest.raises(pub.PublishedCorrupt, match=weights.name):
        pub.import_published("tiny", cache_dir=tmp_path / "c", models_dir=models)
    assert not (tmp_path / "c" / "models" / manifest.models[0].path).exists()


def test_the_checker_names_a_changed_number_and_ignores_timings(tmp_path):
    committed = {
        "results/tiny/05_addition/metrics.json": json.dumps({
            "provenance": {"wall_time_s": 3.0}, "metrics": {"exact_match": 0.997, "train_wall_time_s": 10.0},
            "claims": {"c": {"summary": "keeps 1.24 % of edges"}}}),
        "results/tiny/05_addition/per_seed.csv": "seed,kept,wall_time_s,first use (s)\n0,0.0124,5.0,1\n1,0.0139,6.0,2\n",
    }
    folder = tmp_path / "tiny" / "05_addition"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "provenance": {"wall_time_s": 9.0}, "metrics": {"exact_match": 0.997, "train_wall_time_s": 99.0},
        "claims": {"c": {"summary": "keeps 1.24 % of edges"}}}))
    (folder / "per_seed.csv").write_text("seed,kept,wall_time_s,first use (s)\n0,0.0124,7.0,3\n1,0.0139,8.0,4\n")
    assert pub.compare_results(committed, tmp_path) == []
    (folder / "per_seed.csv").write_text("seed,kept,wall_time_s,first use (s)\n0,0.0124,7.0,3\n1,0.0141,8.0,4\n")
    (folder / "metrics.json").write_text(json.dumps({
        "metrics": {"exact_match": 0.995}, "claims": {"c": {"summary": "keeps 1.25 % of edges"}}}))
    lines = [d.line() for d in pub.compare_results(committed, tmp_path)]
    assert len(lines) == 3
    assert any("per_seed.csv: row 2 column kept: committed '0.0139', now '0.0141'" in line for line in lines)
    assert any("metrics.exact_match" in line for line in lines) and any("claims.c.summary" in line for line in lines)
    (folder / "metrics.json").write_text(json.dumps({
        "metrics": {"exact_match": 0.995, "added": 1}, "claims": {"c": {"summary": "reworded", "verdict": "partly"}}}))
    numbers = [d.line() for d in pub.compare_results(committed, tmp_path, numbers_only=True)]
    assert len(numbers) == 2 and not any("claims" in line or "added" in line for line in numbers), \
        "numbers only: a reworded sentence and an added key pass, a changed number does not"


def test_retrain_gives_the_published_hash_and_compares_numbers_when_it_does_not(published, tmp_path, capsys):
    manifest, models, (dense, read, record) = published
    path = models / "tiny" / "manifest.json"
    data = json.loads(path.read_text())
    wrong = next(m for m in data["models"] if m["kind"] == "sparse" and m["weights"])
    wrong["weights_sha256"] = "0" * 64  # as if the published run had come out otherwise
    path.write_text(json.dumps(data))
    report = tmp_path / "report.json"
    results = pub.retrain("tiny", jobs=2, only="05_addition", cache_dir=tmp_path / "c", models_dir=models,
                          report_path=report)
    assert len(results) == 2 and sorted(r.identical for r in results) == [False, True]
    different = next(r for r in results if not r.identical)
    assert different.retrained_sha256 == read.provenance["weights_sha256"]
    assert different.numbers["kept_fraction"]["inside"] and "headline numbers inside" in different.line()
    out = capsys.readouterr().err
    assert "[2/2]" in out and "1 of 2 models identical" in out
    assert json.loads(report.read_text())["models"][0]["identical"] in (True, False)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "c").rglob("model.safetensors")}
    again = pub.retrain("tiny", jobs=1, only="05_addition", cache_dir=tmp_path / "c", models_dir=models)
    assert [r.retrained_sha256 for r in again] == [r.retrained_sha256 for r in sorted(results, key=lambda r: r.path)]
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "c").rglob("model.safetensors")}, \
        "a second retrain keeps the models the first one finished"


def test_every_committed_result_names_a_published_or_quickly_trained_model():
    """The repository's own published folders: every file listed with its hash, and every model a committed
    result read published (or cheap to train on first use)."""
    for folder in sorted((REPO_ROOT / "models").glob("*/")):
        pub.verify(folder.name)
    for profile in ("tiny",):
        missing = pub.unpublished(profile, REPO_ROOT / "results")
        assert not missing, "; ".join(f"{m['notebook']}: {m['model']} {m['kind']} seed {m['seed']}" for m in missing)


def test_an_unpublished_model_is_found(trained, tmp_path):
    base, cache, root, loaded = trained
    assert pub.unpublished("tiny", root, tmp_path / "models", under_s=0.0)
    pub.publish("tiny", cache_dir=cache, root=root, models_dir=tmp_path / "models")
    assert pub.unpublished("tiny", root, tmp_path / "models", under_s=0.0) == []
