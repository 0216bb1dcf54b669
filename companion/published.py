"""Published models: the training outputs the committed results were computed from, in ``models/<profile>/``.

Three tiers of reproduction, one command each:

    python -m companion.published import  --profile tiny   # verify every published file, copy into the model cache
    python -m companion.published check   --profile tiny   # every committed number against the results now
    python -m companion.published retrain --profile tiny [--jobs N] [--only 05_addition]
    python -m companion.published publish --profile tiny   # the cache entries the committed results used

A published model is its cache entry (``$SPARTAN_CACHE/models/<path>``, the same relative path here): float32
safetensors weights, ``config.json``, tokenizer files for toys, and the record that made it (``info.json``: the
zoo call, recipe, seed, threads, device, torch version, training time, held-out metrics, weights SHA-256;
``history.jsonl`` and ``evals.jsonl``). A run whose weights no chapter reads (a fixed-policy fine-tune, a
controller run) is published as its record only; the zoo trains it again if a reader of weights asks for it.
``manifest.json`` lists every model with the notebooks that read it and every file with its SHA-256. Nothing here
is unpickled: safetensors and JSON only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from spartan_core._util import file_sha256, write_json

from .results import REPO_ROOT, _git, _shown, read_metrics, results_root

__all__ = ["MODELS_DIR", "PublishedModel", "Manifest", "PublishedCorrupt", "Difference", "RetrainedModel",
           "used_by_results", "unpublished", "publish", "import_published", "verify", "check_results",
           "compare_results", "retrain", "main"]

MODELS_DIR = REPO_ROOT / "models"
MANIFEST = "manifest.json"
_SKIPPED = (".lock", ".run", ".tmp")  # a cache entry's neighbours that are work in progress, never published
# Numbers that measure this run's speed, not its result: the checker does not compare them.
TIMING = re.compile(r"(time_s|first_use_s|tokens_per_s|_utc|\(s\))$")


class PublishedCorrupt(ValueError):
    """A published file is missing or differs from the manifest's SHA-256; the message names it."""


@dataclass(frozen=True)
class PublishedModel:
    """One published cache entry: where it lives (``path``, relative to the profile's folder and to the cache's
    ``models/``), what it is, the zoo call that trains it again, and which notebooks read it."""

    path: str
    model: str
    kind: str
    seed: int | None
    threads: int | None
    cache_key: str
    weights_sha256: str
    weights: bool
    notebooks: tuple[str, ...]
    call: dict
    train_wall_time_s: float | None

    @classmethod
    def from_dict(cls, data: dict) -> "PublishedModel":
        return cls(**{**data, "notebooks": tuple(data["notebooks"])})

    @property
    def label(self) -> str:
        return f"{self.model} {self.kind} seed {self.seed} ({self.path})"


@dataclass
class Manifest:
    """``models/<profile>/manifest.json``: every published model and every published file's SHA-256."""

    profile: str
    models: list[PublishedModel] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> "Manifest":
        path = Path(folder) / MANIFEST
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise PublishedCorrupt(f"{_shown(path)}: no manifest (nothing is published for this profile)") from None
        except json.JSONDecodeError as err:
            raise PublishedCorrupt(f"{_shown(path)}: not valid JSON ({err.msg}, line {err.lineno})") from None
        return cls(profile=data["profile"], models=[PublishedModel.from_dict(m) for m in data["models"]],
                   files=dict(data["files"]))

    def write(self, folder: Path) -> Path:
        payload = {"profile": self.profile, "models": [asdict(m) for m in self.models], "files": self.files}
        return write_json(Path(folder) / MANIFEST, payload)

    def for_notebook(self, notebook: str | None) -> list[PublishedModel]:
        return [m for m in self.models if notebook is None or notebook in m.notebooks]


def published_dir(profile: str, models_dir: Path | None = None) -> Path:
    return Path(models_dir or MODELS_DIR) / profile


def _cache_models(cache_dir=None) -> Path:
    from spartan_core.zoo.cache import model_cache_dir

    return model_cache_dir(cache_dir)


def _weights_digest(info: dict) -> str | None:
    from spartan_core.zoo.loaded import weights_digest

    return weights_digest(info.get("weights_sha256"))


# ---- which models the committed results read ----

def used_by_results(profile: str, root: Path | None = None) -> list[dict]:
    """Every model trained here that a complete results folder of ``profile`` names, once, with the notebooks that
    read it and whether any read its weights (models that are not trained here, hub and packaged ones, are not
    published)."""
    merged: dict[tuple, dict] = {}
    for folder in sorted(f for f in (Path(root or results_root()) / profile).glob("[0-9][0-9]_*/")):
        provenance = read_metrics(folder).get("provenance", {})
        if provenance.get("status") != "complete":
            continue
        for model in provenance.get("models", []):
            if not model.get("call") or not model.get("weights_sha256"):
                continue
            key = (model["cache_key"], model["weights_sha256"])
            record = merged.setdefault(key, {**model, "notebooks": [], "weights_read": False})
            record["notebooks"].append(folder.name)
            record["weights_read"] = record["weights_read"] or model.get("weights_read", True)
    return list(merged.values())


def unpublished(profile: str, root: Path | None = None, models_dir: Path | None = None,
                under_s: float = 60.0) -> list[dict]:
    """Models trained here that the committed results of ``profile`` name but ``models/<profile>/`` does not
    publish, other than those trained in under ``under_s`` seconds (cheap enough to train on first use)."""
    folder = published_dir(profile, models_dir)
    published = ({(m.cache_key, m.weights_sha256) for m in Manifest.read(folder).models}
                 if (folder / MANIFEST).is_file() else set())
    out = []
    for folder in sorted(f for f in (Path(root or results_root()) / profile).glob("[0-9][0-9]_*/")):
        for model in read_metrics(folder).get("provenance", {}).get("models", []):
            trained_here = str(model.get("source") or "").endswith("trained here")
            if (trained_here and (model.get("cache_key"), model.get("weights_sha256")) not in published
                    and (model.get("train_wall_time_s") or 0) >= under_s):
                out.append({**model, "notebook": folder.name})
    return out


def _entry_path(models: Path, record: dict) -> Path:
    """The cache entry of a provenance record: ``<name>/<key>`` for a toy, ``<name>/<dense key>/sparse/<key>``
    for a post-trained copy, checked against the record's weights hash."""
    name, key = record["model"], record["cache_key"]
    candidates = [models / name / key] + sorted(models.glob(f"{name}/*/sparse/{key}"))
    for path in candidates:
        if (path / "info.json").is_file():
            info = json.loads((path / "info.json").read_text())
            if _weights_digest(info) == record["weights_sha256"]:
                return path
            raise PublishedCorrupt(f"cache: {path} holds other weights than the results used "
                                   f"({record['model']} seed {record['seed']}): retrain it or run the notebook again")
    raise PublishedCorrupt(f"cache: {record['model']} {record['kind']} seed {record['seed']} (key {key}), read by "
                           f"{', '.join(record['notebooks'])}, is not in {_shown(models)}: "
                           "train it first (make retrain, or run the notebook)")


def _entry_files(entry: Path, weights: bool) -> list[Path]:
    return sorted(p for p in entry.iterdir()
                  if p.is_file() and not p.name.endswith(_SKIPPED) and (weights or p.suffix != ".safetensors"))


# ---- publish: cache -> models/<profile>/ ----

def publish(profile: str, *, cache_dir=None, root: Path | None = None, models_dir: Path | None = None) -> Manifest:
    """Copy into ``models/<profile>/`` the cache entries the committed results of ``profile`` used (weights only
    where a notebook read them), drop what they no longer use, leave unchanged entries untouched, and rewrite
    the manifest."""
    models, target = _cache_models(cache_dir), published_dir(profile, models_dir)
    records = used_by_results(profile, root)
    if not records:
        raise PublishedCorrupt(f"results/{profile}: no complete results name a model trained here; run the "
                               "notebooks first")
    for stale in sorted(target.rglob("*.tmp"), key=lambda p: -len(p.parts)):  # left by a killed publish
        shutil.rmtree(stale, ignore_errors=True)
    manifest = Manifest(profile=profile)
    for record in sorted(records, key=lambda r: (r["model"], r["kind"], r["seed"] or 0, r["cache_key"])):
        entry = _entry_path(models, record)
        relative = entry.relative_to(models).as_posix()
        published = target / relative
        wanted = _entry_files(entry, record["weights_read"])
        digests = {path.name: file_sha256(path) for path in wanted}
        present = {p.name for p in published.iterdir() if p.is_file()} if published.is_dir() else set()
        if present != set(digests) or any(file_sha256(published / name) != digest
                                          for name, digest in digests.items()):
            _replace_entry(published, wanted)
        manifest.files.update({f"{relative}/{name}": digest for name, digest in sorted(digests.items())})
        manifest.models.append(PublishedModel(
            path=relative, model=record["model"], kind=record["kind"], seed=record["seed"],
            threads=record["threads"], cache_key=record["cache_key"], weights_sha256=record["weights_sha256"],
            weights=bool(record["weights_read"]), notebooks=tuple(record["notebooks"]), call=record["call"],
            train_wall_time_s=record["train_wall_time_s"]))
    _drop_unlisted(target, manifest)
    manifest.write(target)
    return manifest


def _replace_entry(target: Path, files: Iterable[Path]) -> None:
    """Copy ``files`` into a staging folder beside ``target`` and swap it in, so a killed copy never leaves half an
    entry; the post-trained copies that live inside a dense entry's folder move over unchanged."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for path in files:
        shutil.copy2(path, tmp / path.name)
    if target.is_dir():
        for child in target.iterdir():
            if child.is_dir() and not child.name.endswith(_SKIPPED):
                child.replace(tmp / child.name)
        shutil.rmtree(target)
    tmp.replace(target)


def _drop_unlisted(target: Path, manifest: Manifest) -> None:
    """Remove published folders that no model of the manifest lives in (models the results no longer use)."""
    keep = {Path(m.path) for m in manifest.models}
    for info in sorted(target.rglob("info.json")):
        if info.parent.relative_to(target) not in keep:
            for file in info.parent.iterdir():
                if file.is_file():
                    file.unlink()
    for folder in sorted((p for p in target.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()


def published_size(profile: str, models_dir: Path | None = None) -> int:
    return sum(p.stat().st_size for p in published_dir(profile, models_dir).rglob("*") if p.is_file())


# ---- import: models/<profile>/ -> cache ----

def verify(profile: str, models_dir: Path | None = None) -> Manifest:
    """The manifest, after checking that every file it lists exists with its SHA-256 and that the folder holds
    no file it does not list; raises :class:`PublishedCorrupt` naming the first bad file."""
    folder = published_dir(profile, models_dir)
    manifest = Manifest.read(folder)
    for relative, digest in sorted(manifest.files.items()):
        path = folder / relative
        if not path.is_file():
            raise PublishedCorrupt(f"{_shown(path)}: listed in the manifest but missing")
        if file_sha256(path) != digest:
            raise PublishedCorrupt(f"{_shown(path)}: SHA-256 differs from the manifest (a corrupt or altered file)")
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        if path.relative_to(folder).as_posix() not in manifest.files:
            raise PublishedCorrupt(f"{_shown(path)}: not listed in the manifest (run make publish)")
    return manifest


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)

    def line(self, profile: str) -> str:
        line = (f"published models ({profile}): {len(self.imported) + len(self.replaced)} imported into the cache, "
                f"{len(self.present)} already there")
        return line + "".join(f"\n  replaced a cache entry with other weights: {p}" for p in self.replaced)


def import_published(profile: str, *, cache_dir=None, models_dir: Path | None = None) -> ImportReport:
    """Verify every published file of ``profile``, then copy each model into the cache unless the cache already
    holds it (same weights hash; and its weights, where they are published). An entry with other weights under
    the same key (trained on another machine) is replaced: the published weights are the ones the book read."""
    from spartan_core.zoo.cache import is_built

    manifest, folder, models = verify(profile, models_dir), published_dir(profile, models_dir), _cache_models(cache_dir)
    report = ImportReport()
    for model in manifest.models:
        entry = models / model.path
        info = entry / "info.json"
        if info.is_file():
            same = _weights_digest(json.loads(info.read_text())) == model.weights_sha256
            if same and is_built(entry, model.weights):
                report.present.append(model.path)
                continue
            (report.imported if same else report.replaced).append(model.path)
        else:
            report.imported.append(model.path)
        _replace_entry(entry, sorted(p for p in (folder / model.path).iterdir() if p.is_file()))
    return report


# ---- check: the results now against the committed ones ----

@dataclass(frozen=True)
class Difference:
    """One number (or text) that differs from the committed results: file, where in it, and both values."""

    file: str
    where: str
    committed: Any
    now: Any

    def line(self) -> str:
        return f"{self.file}: {self.where}: committed {self.committed!r}, now {self.now!r}"


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _same(committed, now, numbers_only: bool = False) -> bool:
    """Equal as printed: numbers to a relative 1e-6 (finer than any precision the book prints), text exactly
    (``numbers_only``: text that is no number may differ, as after rewording a sentence or renaming a head)."""
    a, b = _number(committed), _number(now)
    if a is None or b is None:
        if numbers_only and isinstance(committed, str) and isinstance(now, str) and a is None and b is None:
            return True
        return committed == now
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


def _compare_tree(file: str, committed, now, where: str = "", numbers_only: bool = False) -> list[Difference]:
    if isinstance(committed, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(committed) | set(now)):
            if TIMING.search(str(key)) or (numbers_only and key not in committed):
                continue
            out += _compare_tree(file, committed.get(key), now.get(key), f"{where}.{key}" if where else str(key),
                                 numbers_only)
        return out
    if isinstance(committed, list) and isinstance(now, list) and len(committed) == len(now):
        return [d for i, (a, b) in enumerate(zip(committed, now))
                for d in _compare_tree(file, a, b, f"{where}[{i}]", numbers_only)]
    return [] if _same(committed, now, numbers_only) else [Difference(file, where, committed, now)]


def _compare_csv(file: str, committed: str, now: str, numbers_only: bool = False) -> list[Difference]:
    old, new = list(csv.DictReader(io.StringIO(committed))), list(csv.DictReader(io.StringIO(now)))
    if len(old) != len(new):
        return [Difference(file, "rows", len(old), len(new))]
    out = []
    for i, (a, b) in enumerate(zip(old, new)):
        for column in a.keys() | b.keys():
            if not TIMING.search(column or "") and not _same(a.get(column), b.get(column), numbers_only):
                out.append(Difference(file, f"row {i + 1} column {column}", a.get(column), b.get(column)))
    return out


def committed_results(profile: str, ref: str = "HEAD") -> list[str]:
    return (_git("ls-tree", "-r", "--name-only", ref, "--", f"results/{profile}") or "").split()


def check_results(profile: str, ref: str = "HEAD", root: Path | None = None,
                  numbers_only: bool = False) -> list[Difference]:
    """Every number of the committed ``results/<profile>`` at ``ref`` against the files now under ``root``."""
    return compare_results({name: _git("show", f"{ref}:{name}") for name in committed_results(profile, ref)
                            if name.endswith((".json", ".csv"))}, root, numbers_only)


def compare_results(committed: dict[str, str], root: Path | None = None,
                    numbers_only: bool = False) -> list[Difference]:
    """Each committed results file (``results/...`` path -> text) against the file now under ``root``: every
    ``metrics`` and ``claims`` number of a ``metrics.json`` and every CSV cell, not provenance or timings. The
    differences; none when the run reproduced the book. ``numbers_only`` lets text that is no number differ and
    keys be added (a refactoring that rewords sentences and records more must still give every number)."""
    root = Path(root or results_root())
    out = []
    for name, text in sorted(committed.items()):
        path = root / Path(name).relative_to("results")
        if not path.is_file():
            out.append(Difference(name, "file", "present", "missing"))
        elif name.endswith(".csv"):
            out += _compare_csv(name, text, path.read_text(), numbers_only)
        else:
            old, new = json.loads(text), json.loads(path.read_text())
            out += _compare_tree(name, {k: old.get(k) for k in ("metrics", "claims")},
                                 {k: new.get(k) for k in ("metrics", "claims")}, numbers_only=numbers_only)
    return out


# ---- retrain: every published model again, from scratch, as parallel jobs ----

@dataclass(frozen=True)
class RetrainedModel:
    """A published model trained again: its hash beside the published one, and where they differ, each headline
    number beside the published spread over the model's training seeds."""

    path: str
    label: str
    published_sha256: str
    retrained_sha256: str
    train_wall_time_s: float
    numbers: dict[str, dict]

    @property
    def identical(self) -> bool:
        return self.published_sha256 == self.retrained_sha256

    def line(self) -> str:
        if self.identical:
            return f"  {self.label}: identical weights (SHA-256 {self.retrained_sha256[:12]})"
        inside = [k for k, v in self.numbers.items() if v["inside"]]
        outside = [f"{k} {v['retrained']:.4g} outside {v['low']:.4g}–{v['high']:.4g}"
                   for k, v in self.numbers.items() if not v["inside"]]
        return (f"  {self.label}: different weights ({self.retrained_sha256[:12]}, published "
                f"{self.published_sha256[:12]}); {len(inside)} of {len(self.numbers)} headline numbers inside the "
                f"published spread" + (f"; {'; '.join(outside)}" if outside else ""))


def headline_numbers(info: dict, kind: str) -> dict[str, float]:
    """The held-out numbers a model's record carries (the sparse model's, for a post-trained one), flattened."""
    metrics = info.get("metrics", {})
    metrics = metrics.get("sparse", {}) if kind == "sparse" else metrics
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": float(v) for k, v in value.items() if _number(v) is not None
                        and not isinstance(v, str)})
        elif _number(value) is not None and not isinstance(value, str):
            out[key] = float(value)
    return out


def _seedless(call: dict) -> str:
    """The call with its training seeds removed: models that differ only there form one spread."""
    def strip(part):
        return {k: strip(v) for k, v in part.items() if k != "seed"} if isinstance(part, dict) else part
    return json.dumps(strip(call), sort_keys=True)


def _spreads(manifest: Manifest, folder: Path) -> dict[str, dict[str, tuple[float, float]]]:
    groups: dict[str, list[dict]] = {}
    for model in manifest.models:
        info = json.loads((folder / model.path / "info.json").read_text())
        groups.setdefault(_seedless(model.call), []).append(headline_numbers(info, model.kind))
    return {group: {k: (min(r[k] for r in rows if k in r), max(r[k] for r in rows if k in r))
                    for k in set().union(*rows)} for group, rows in groups.items()}


def _job_command(model: PublishedModel) -> list[str]:
    return [sys.executable, "-m", "companion.published", "_train", json.dumps(model.call)]


def _train_one(call: dict) -> dict:
    """Run one zoo call (in this process) and return the provenance of what it made, with its cache folder (which
    differs from the published one when what the key hashes, e.g. the code model's corpus, differs here)."""
    from spartan_core import zoo

    args = dict(call)
    fn, name = args.pop("fn"), args.pop("name")
    if fn == "load":
        loaded = zoo.load(name, progress=False, device="cpu", **args["overrides"])
    else:
        loaded = zoo.load_sparse(name, args["recipe"], dense_overrides=args["dense_overrides"], progress=False,
                                 device="cpu", weights=False)
    return {**loaded.provenance, "cache_dir": loaded.info["cache_dir"]}


def default_jobs(models: Iterable[PublishedModel]) -> int:
    """Cores ÷ the largest thread count a job pins itself to (at least one job)."""
    widest = max((m.threads or 1 for m in models), default=1)
    return max(1, (os.cpu_count() or 1) // widest)


def retrain(profile: str, *, jobs: int | None = None, only: str | None = None, cache_dir=None,
            models_dir: Path | None = None, report_path: Path | None = None, stream=None) -> list[RetrainedModel]:
    """Train every published model of ``profile`` (or those ``only`` reads) again from scratch in a cache of its
    own (``<cache>/retrain/<profile>``), ``jobs`` at a time, each in its own process pinned to its recipe's
    threads; dense models before their post-trained copies. A killed retrain resumes (finished models are kept,
    unfinished ones resume from their checkpoints). Returns, and writes to ``report_path``, one comparison per
    model."""
    from spartan_core.data import resolve_cache_dir
    from spartan_core.training.config import describe_machine

    stream = stream or sys.stderr
    manifest, folder = verify(profile, models_dir), published_dir(profile, models_dir)
    chosen = manifest.for_notebook(only)
    if not chosen:
        raise ValueError(f"--only: no published model of {profile} is read by {only!r}")
    chosen.sort(key=lambda m: (m.kind != "dense", -(m.train_wall_time_s or 0)))
    jobs = jobs or default_jobs(chosen)
    cache = resolve_cache_dir(cache_dir) / "retrain" / profile
    spreads = _spreads(manifest, folder)
    total_estimate = sum(m.train_wall_time_s or 0 for m in chosen)
    started, done_estimate, results = time.perf_counter(), 0.0, []
    print(f"retrain {profile}: {len(chosen)} models, {jobs} at a time, in {cache}; the published runs recorded "
          f"{total_estimate / 60:.1f} min of training", file=stream, flush=True)

    def run(model: PublishedModel) -> dict:
        env = {**os.environ, "SPARTAN_CACHE": str(cache), "OMP_NUM_THREADS": str(model.threads or 1),
               "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0"}
        done = subprocess.run(_job_command(model), cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"{model.label}: training failed ({last})")
        return json.loads(done.stdout.strip().splitlines()[-1])

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run, m): m for m in chosen}
        for future in concurrent.futures.as_completed(futures):
            model, made = futures[future], future.result()
            info = json.loads((Path(made["cache_dir"]) / "info.json").read_text())
            numbers = {}
            if made["weights_sha256"] != model.weights_sha256:
                spread = spreads.get(_seedless(model.call), {})
                for key, value in headline_numbers(info, model.kind).items():
                    if key in spread:
                        low, high = spread[key]
                        numbers[key] = {"retrained": value, "low": low, "high": high,
                                        "inside": low - 1e-12 <= value <= high + 1e-12}
            results.append(RetrainedModel(path=model.path, label=f"{model.model} {model.kind} seed {model.seed}",
                                          published_sha256=model.weights_sha256,
                                          retrained_sha256=made["weights_sha256"],
                                          train_wall_time_s=info.get("train_wall_time_s") or 0.0, numbers=numbers))
            done_estimate += model.train_wall_time_s or 0
            elapsed = time.perf_counter() - started
            left = elapsed / done_estimate * (total_estimate - done_estimate) if done_estimate else float("nan")
            print(f"[{len(results)}/{len(chosen)}] {results[-1].label}: "
                  f"{'identical' if results[-1].identical else 'different'} weights; elapsed "
                  f"{elapsed / 60:.1f} min, about {left / 60:.1f} min to go", file=stream, flush=True)
    wall = time.perf_counter() - started
    results.sort(key=lambda r: r.path)
    print(f"retrain {profile}: {sum(r.identical for r in results)} of {len(results)} models identical to the "
          f"published weights, {wall / 60:.1f} min", file=stream)
    for result in results:
        print(result.line(), file=stream)
    if report_path is not None:
        write_json(report_path, {"profile": profile, "only": only, "jobs": jobs, "wall_time_s": round(wall, 1),
                                 "machine": describe_machine(), "cache": str(cache),
                                 "models": [{**asdict(r), "identical": r.identical} for r in results]})
    return results


def retrain_report_path(profile: str, only: str | None, root: Path | None = None) -> Path:
    return Path(root or results_root()) / "retrain" / f"{profile}{'-' + only if only else ''}.json"


# ---- command line ----

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m companion.published", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("import", "publish", "check", "retrain"):
        command = commands.add_parser(name)
        command.add_argument("--profile", default="tiny")
    commands.choices["check"].add_argument("--ref", default="HEAD", help="the commit whose results are the book's")
    commands.choices["check"].add_argument("--numbers-only", action="store_true",
                                           help="let text that is no number differ (sentences, head names)")
    commands.choices["retrain"].add_argument("--jobs", type=int, default=None,
                                             help="models trained at a time (default: cores ÷ threads per job)")
    commands.choices["retrain"].add_argument("--only", default=None, help="only the models this notebook reads")
    train = commands.add_parser("_train", help=argparse.SUPPRESS)
    train.add_argument("call")
    args = parser.parse_args(argv)
    from .params import resolve_profile

    try:
        if args.command == "_train":
            print(json.dumps(_train_one(json.loads(args.call))))
            return 0
        profile = resolve_profile(args.profile)
        if args.command == "import":
            if not (published_dir(profile) / MANIFEST).is_file():
                print(f"published models ({profile}): none; every model is trained on first use")
                return 0
            print(import_published(profile).line(profile))
        elif args.command == "publish":
            manifest = publish(profile)
            print(f"published models ({profile}): {len(manifest.models)} models "
                  f"({sum(m.weights for m in manifest.models)} with weights, the rest as run records), "
                  f"{published_size(profile) / 2**20:.1f} MiB in {_shown(published_dir(profile))}")
        elif args.command == "check":
            if not committed_results(profile, args.ref):
                print(f"check ({profile}): no results of this profile are committed at {args.ref}; nothing to check")
                return 0
            differences = check_results(profile, args.ref, numbers_only=args.numbers_only)
            for difference in differences:
                print(difference.line())
            print(f"check ({profile}): {len(differences)} numbers differ from the committed results at {args.ref}"
                  if differences else f"check ({profile}): every number equals the committed results at {args.ref}")
            return 1 if differences else 0
        else:
            if args.jobs is not None and args.jobs < 1:
                raise ValueError(f"JOBS: expected a positive number of jobs, got {args.jobs}")
            from .params import notebook_names

            if args.only is not None and args.only not in notebook_names():
                raise ValueError(f"ONLY: no notebook {args.only!r} (have: {', '.join(notebook_names())})")
            results = retrain(profile, jobs=args.jobs, only=args.only,
                              report_path=retrain_report_path(profile, args.only))
            return 0 if results else 1
    except (PublishedCorrupt, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
