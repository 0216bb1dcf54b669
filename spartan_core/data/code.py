"""The running interpreter's standard library as a code corpus (PSF licence, on every machine, no download).

* Files: every ``.py`` under ``sysconfig``'s ``stdlib`` directory, sorted, without test suites (``test``/``tests``/
  ``idle_test`` folders, ``test_*.py``), ``site-packages`` or files that are not UTF-8.
* Modules: a file belongs to its top-level module (``email/mime/text.py`` -> ``email``). Whole modules are held out
  (:func:`heldout_module`: a hash of the name, so adding a module to a later Python moves no other module), so held-out
  code never shares a file or a package with training code.
* :func:`corpus_identity`: the Python version, the split and the SHA-256 of the sorted (path, file hash) list. It goes
  into a model's cache key and provenance: another Python version is another, honestly labelled dataset.
* :func:`copy_blocks`: the copying curriculum, blocks of random tokens repeated once (``x x``), only the repeat
  scored. A small model on a few million code tokens does not form induction heads within a CPU budget without it
  (see the registry entry of ``python-lm``).
"""

from __future__ import annotations

import hashlib
import json
import sys
import sysconfig
from pathlib import Path

import torch

from . import resolve_cache_dir
from .induction import distinct_random_tokens
from .text import _cached_streams, _tokenize_documents, pack_blocks
from .tokenizers import texts_fingerprint, train_bpe

__all__ = ["SKIPPED_DIRS", "stdlib_root", "stdlib_files", "module_of", "heldout_module", "code_split",
           "corpus_identity", "code_tokenizer", "code_data", "copy_blocks", "with_copy_blocks",
           "heldout_names"]

SKIPPED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _skipped(relative: Path) -> bool:
    return any(part in SKIPPED_DIRS for part in relative.parts[:-1]) or relative.name.startswith("test_")


def stdlib_files(root: Path | None = None) -> dict[str, Path]:
    """Relative POSIX path -> file, sorted, for every UTF-8 ``.py`` source of the corpus (see the module docstring)."""
    root = stdlib_root() if root is None else Path(root)
    files = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if _skipped(relative):
            continue
        try:
            path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        files[relative.as_posix()] = path
    if not files:
        raise FileNotFoundError(f"stdlib: no Python sources under {root}")
    return files


def module_of(relative: str) -> str:
    """The top-level module a file belongs to: ``email/mime/text.py`` -> ``email``, ``os.py`` -> ``os``."""
    first = relative.split("/", 1)[0]
    return first[:-3] if first.endswith(".py") else first


def heldout_module(module: str, heldout_percent: int) -> bool:
    """Whether ``module`` is held out: the first byte pair of its name's SHA-256, mod 100, is below the percentage."""
    if not 0 < heldout_percent < 100:
        raise ValueError(f"heldout_percent: must be in 1..99, got {heldout_percent}")
    return int(hashlib.sha256(module.encode()).hexdigest()[:4], 16) % 100 < heldout_percent


def code_split(files: dict[str, Path], heldout_percent: int) -> dict[str, dict[str, Path]]:
    """``{"train": files, "validation": files}``, split by module; both must be non-empty."""
    split = {"train": {}, "validation": {}}
    for relative, path in files.items():
        split["validation" if heldout_module(module_of(relative), heldout_percent) else "train"][relative] = path
    if not split["train"] or not split["validation"]:
        raise ValueError(f"heldout_percent: {heldout_percent} leaves a split empty ({len(files)} files)")
    return split


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def corpus_identity(heldout_percent: int, root: Path | None = None) -> dict:
    """What the corpus is: Python version, file and module counts per split, the validation modules, and one SHA-256
    over the sorted ``split path sha256`` lines (a changed file, another split or another Python changes it)."""
    split = code_split(stdlib_files(root), heldout_percent)
    lines = "".join(f"{name} {relative} {_file_digest(path)}\n"
                    for name, files in split.items() for relative, path in files.items())
    return {
        "python": ".".join(map(str, sys.version_info[:3])),
        "files": {name: len(files) for name, files in split.items()},
        "validation_modules": sorted({module_of(r) for r in split["validation"]}),
        "sha256": hashlib.sha256(lines.encode()).hexdigest(),
    }


def _texts(files: dict[str, Path]) -> dict[str, str]:
    return {relative: path.read_text(encoding="utf-8") for relative, path in files.items()}


def code_tokenizer(vocab_size: int, heldout_percent: int, *, cache_dir=None, root: Path | None = None):
    """Byte-level BPE trained on the training modules only, cached by vocabulary size and training-text hash."""
    texts = _texts(code_split(stdlib_files(root), heldout_percent)["train"])
    path = resolve_cache_dir(cache_dir) / "tokenizers" / f"stdlib-bpe{vocab_size}-{texts_fingerprint(texts)}.json"
    return train_bpe(list(texts.values()), vocab_size, path)


def code_data(tokenizer, *, block_size: int, heldout_percent: int, cache_dir=None,
              root: Path | None = None) -> dict[str, dict]:
    """``{"train": blocks, "validation": blocks}``: each file followed by end-of-text, packed into blocks (token
    streams cached per tokenizer and corpus hash)."""
    identity = corpus_identity(heldout_percent, root)

    def build():
        split = code_split(stdlib_files(root), heldout_percent)
        return {name: _tokenize_documents(tokenizer, list(_texts(files).values())) for name, files in split.items()}

    streams = _cached_streams(cache_dir, "stdlib", tokenizer, {"corpus": identity["sha256"]}, build)
    return {name: pack_blocks(stream, block_size) for name, stream in streams.items()}


def copy_blocks(n_blocks: int, block_size: int, vocab_size: int, *, low: int = 1, seed: int = 0,
                segment: tuple[int, int] = (4, 32)) -> dict:
    """``n_blocks`` rows of random segments each followed by its repeat, ``x x y y z z ...``, segment lengths drawn
    uniformly from ``segment`` (the last pair is cut at the block's end), every token of a row distinct and drawn
    from ``[low, vocab_size)``. ``labels`` score the repeats only, from their second token on (what copying can
    predict). The lengths vary so that the only rule that works is "find the previous occurrence of this token and
    copy what followed": with one fixed period a model learns to attend a fixed distance back, which is no induction
    head (a curriculum of ``x x`` halves did exactly that, with induction scores of 0.02 on the probe)."""
    shortest, longest = segment
    if n_blocks < 1:
        raise ValueError(f"copy_blocks: n_blocks must be at least 1, got {n_blocks}")
    if not 2 <= shortest <= longest:
        raise ValueError(f"segment: need 2 <= shortest <= longest, got {segment}")
    if block_size < 2 * shortest:
        raise ValueError(f"block_size: {block_size} cannot hold one repeated segment of {shortest}")
    tokens = distinct_random_tokens(n_blocks, (block_size + 1) // 2, vocab_size, seed=seed, low=low)
    lengths = torch.randint(shortest, longest + 1, (n_blocks, block_size // (2 * shortest) + 1),
                            generator=torch.Generator().manual_seed(seed + 1))
    ids = torch.empty(n_blocks, block_size, dtype=torch.long)
    labels = torch.full((n_blocks, block_size), -100, dtype=torch.long)
    for row in range(n_blocks):
        position = used = 0
        for length in lengths[row].tolist():
            if position >= block_size:
                break
            length = min(length, (block_size - position + 1) // 2)
            piece = tokens[row, used:used + length]
            used += length
            first = piece[: block_size - position]
            ids[row, position:position + len(first)] = first
            repeat = piece[: max(0, block_size - position - length)]
            ids[row, position + length:position + length + len(repeat)] = repeat
            labels[row, position + length + 1:position + length + len(repeat)] = repeat[1:]
            position += 2 * length
    return {"input_ids": ids, "labels": labels}


def _cached_copy_blocks(n_blocks: int, block_size: int, vocab_size: int, low: int, seed: int, cache_dir) -> dict:
    """:func:`copy_blocks`, stored under the cache's ``tokens/`` folder (tens of thousands of rows take seconds)."""
    from safetensors.torch import load_file, save_file

    name = f"copy-{n_blocks}x{block_size}-v{vocab_size}-low{low}-seed{seed}.safetensors"
    path = resolve_cache_dir(cache_dir) / "tokens" / name
    if path.is_file():
        return load_file(str(path))
    blocks = copy_blocks(n_blocks, block_size, vocab_size, low=low, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(blocks, str(tmp))
    tmp.replace(path)
    return blocks


def with_copy_blocks(blocks: dict, fraction: float, vocab_size: int, *, low: int = 1, seed: int = 0,
                     cache_dir=None) -> dict:
    """``blocks`` (code, every token scored) plus copy blocks making up ``fraction`` of the rows, shuffled together
    deterministically; every row carries ``labels``. The copy blocks are cached (see :func:`_cached_copy_blocks`)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"copy_fraction: must be in [0, 1), got {fraction}")
    ids = blocks["input_ids"]
    if fraction == 0:
        return {"input_ids": ids, "labels": ids.clone()}
    n_copy = max(1, round(len(ids) * fraction / (1 - fraction)))
    copies = _cached_copy_blocks(n_copy, ids.shape[1], vocab_size, low, seed, cache_dir)
    all_ids = torch.cat([ids, copies["input_ids"]])
    labels = torch.cat([ids, copies["labels"]])
    order = torch.randperm(len(all_ids), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": all_ids[order], "labels": labels[order]}


def _signatures(files: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(function name, positional argument names without self/cls) of every ``def`` in ``files``."""
    import ast

    found = []
    for path in files.values():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except SyntaxError:  # a file written for another Python version
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
                found.append((node.name, args))
    return found


def heldout_names(heldout_percent: int, root: Path | None = None) -> dict[str, list[str]]:
    """Sorted, distinct ``functions`` and ``arguments`` names defined in the held-out modules (the Docstring task's
    vocabulary: real names, none from the code a model trained on)."""
    signatures = _signatures(code_split(stdlib_files(root), heldout_percent)["validation"])
    return {"functions": sorted({name for name, _ in signatures if name.isidentifier() and not name.startswith("_")}),
            "arguments": sorted({a for _, args in signatures for a in args if not a.startswith("_")})}
