"""The model cache: entries under ``$SPARTAN_CACHE/models/<name>/<key>/`` (safetensors + config json + info.json),
keyed by a hash of what made them; one process builds an entry while others wait (a file lock); an entry is
written beside its final place and renamed in (a kill never leaves half an entry); its weights' SHA-256 is
recorded and verified on every load."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

from .._util import file_sha256, open_lock, write_json, write_jsonl
from ..data import resolve_cache_dir

__all__ = ["FORMAT_VERSION", "CacheCorrupt", "model_cache_dir", "config_hash", "locked", "quiet_transformers",
           "publish", "verified_info", "from_cache", "is_built"]

FORMAT_VERSION = 5  # bump when what training produces or records changes: older cache entries are then rebuilt


class CacheCorrupt(ValueError):
    """A cache entry is unreadable or its weights do not match their checksum; the message names the folder."""


def model_cache_dir(cache_dir=None) -> Path:
    path = resolve_cache_dir(cache_dir) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_hash(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


@contextlib.contextmanager
def locked(path: Path, built=None):
    """One process at a time builds a cache entry; the others wait, then find it built. With ``built`` (a check of
    the finished entry) it yields whether this process must build it, and an entry already built is read without
    touching the lock file, so a complete cache works read-only."""
    if built is not None and built():
        yield False
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_lock(path.with_name(path.name + ".lock"))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield None if built is None else not built()
    finally:
        os.close(fd)  # closing the descriptor drops the lock


@contextlib.contextmanager
def quiet_transformers():
    """No "Loading weights"/"Writing model shards" bars for cache reads and writes (they take a second)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _weights_checksums(folder: Path) -> dict[str, str]:
    return {file.name: file_sha256(file) for file in sorted(folder.glob("*.safetensors"))}


def publish(final: Path, run_dir: Path | None, model, info: dict, history: list[dict], evals: list[dict],
             tokenizer=None) -> None:
    """Write a trained model's cache entry beside ``final`` and rename it into place, so a killed process never
    leaves a half-written entry; then drop the run's checkpoints. ``info.json`` records the weights' checksums,
    which every load verifies."""
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_transformers():
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    write_jsonl(tmp / "history.jsonl", history)
    write_jsonl(tmp / "evals.jsonl", evals)
    write_json(tmp / "info.json", {**info, "weights_sha256": _weights_checksums(tmp)})
    shutil.rmtree(final, ignore_errors=True)
    tmp.replace(final)
    if run_dir is not None:
        shutil.rmtree(run_dir, ignore_errors=True)


def is_built(final: Path, weights: bool = True) -> bool:
    """Whether the entry holds its run record and, when ``weights``, every weight file its record names (an entry
    imported as a run record only, without weights, is built for readers of numbers and trained again for readers
    of weights)."""
    if not (final / "info.json").is_file():
        return False
    if not weights:
        return True
    try:
        recorded = json.loads((final / "info.json").read_text()).get("weights_sha256")
    except (OSError, json.JSONDecodeError):
        return True  # verified_info names the unreadable file
    return recorded is None or all((final / name).is_file() for name in recorded)


def verified_info(final: Path, weights: bool = True) -> dict:
    """The entry's info.json, after checking its weights against the recorded checksums (entries written before
    checksums existed get them now); ``weights=False`` reads the record without touching the weights."""
    advice = f"delete {final} and it is rebuilt on next use"
    try:
        info = json.loads((final / "info.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CacheCorrupt(f"cache: {final}/info.json is unreadable ({type(err).__name__}); {advice}") from None
    if not weights:
        return info
    found = _weights_checksums(final)
    recorded = info.get("weights_sha256")
    if recorded is None:
        info["weights_sha256"] = found
        write_json(final / "info.json", info)
    elif found != recorded:
        name = next((n for n in sorted(set(found) | set(recorded)) if found.get(n) != recorded.get(n)), "?")
        raise CacheCorrupt(f"cache: {final}/{name} does not match its checksum (a corrupt or altered file); {advice}")
    return info


def from_cache(final: Path, loader):
    """``loader(final)`` (a from_pretrained) with an error that names the cache entry to delete."""
    try:
        with quiet_transformers():
            return loader(final)
    except (OSError, ValueError, RuntimeError) as err:
        raise CacheCorrupt(f"cache: {final} cannot be loaded ({type(err).__name__}: {str(err).splitlines()[0][:160]}); "
                           f"delete that folder and it is rebuilt on next use") from None
