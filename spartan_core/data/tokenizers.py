"""Tokenizers that work offline.

* GPT-2's exact byte-level BPE, rebuilt from the rank file that the ``openai-whisper`` package ships
  (``whisper/assets/gpt2.tiktoken``; the file is located without importing whisper, which needs numba).
  :func:`gpt2_encoding` gives a ``tiktoken.Encoding``; :func:`gpt2_tokenizer` a transformers fast tokenizer with
  GPT-2's own pre-tokenizer (``ByteLevel`` with its built-in regex), so ids equal the hub ``gpt2`` tokenizer's.
* :func:`train_bpe`: a small byte-level BPE trained here with ``tokenizers``. The Shakespeare LM uses a vocabulary
  of 2,048 rather than GPT-2's 50,257 because on two CPU cores the output softmax and embedding of a 50k vocab would
  dominate a d=128 model (about 6.4M embedding parameters for 1.6M training tokens) and the pretraining budget of a
  few minutes would be spent there; the calibration in the book's method notes used the same 2,048.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
from pathlib import Path

__all__ = [
    "ENDOFTEXT",
    "GPT2_PATTERN",
    "gpt2_tiktoken_path",
    "gpt2_encoding",
    "gpt2_tokenizer",
    "train_bpe",
    "load_tokenizer_file",
    "texts_fingerprint",
]

ENDOFTEXT = "<|endoftext|>"
GPT2_EOT_ID = 50256
# GPT-2's pre-tokenisation regex (tiktoken's r50k_base pattern).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def gpt2_tiktoken_path() -> Path:
    """Path of ``gpt2.tiktoken`` inside the installed ``openai-whisper`` package."""
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "gpt2.tiktoken: the openai-whisper package is not installed; "
            "run `pip install --no-deps openai-whisper==20250625`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "assets" / "gpt2.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"gpt2.tiktoken: not found at {path}")
    return path


def _gpt2_ranks() -> dict[bytes, int]:
    """The rank file: one ``base64(token bytes) rank`` pair per line."""
    ranks = {}
    for line in gpt2_tiktoken_path().read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def gpt2_encoding():
    """GPT-2's BPE as a ``tiktoken.Encoding`` (50,257 ids, ``<|endoftext|>`` = 50256)."""
    import tiktoken

    return tiktoken.Encoding(
        name="gpt2-offline",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=_gpt2_ranks(),
        special_tokens={ENDOFTEXT: GPT2_EOT_ID},
        explicit_n_vocab=GPT2_EOT_ID + 1,
    )


def _wrap(tokenizer_object, eos: str = ENDOFTEXT):
    """A transformers fast tokenizer around a ``tokenizers.Tokenizer``, with ``eos`` as bos/eos/unk/pad."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_object, bos_token=eos, eos_token=eos, unk_token=eos, pad_token=eos,
    )


def gpt2_tokenizer(cache_dir: Path | str | None = None):
    """GPT-2's tokenizer as a transformers ``PreTrainedTokenizerFast``, built offline from the tiktoken ranks.

    Vocabulary and merges come from transformers' ``TikTokenConverter``; the pre-tokenizer and decoder are GPT-2's
    byte-level ones, exactly as in the hub ``gpt2`` tokenizer.json. The pad token is ``<|endoftext|>`` (GPT-2 has
    none), so padding needs an attention mask. The conversion (~2 s) is cached as ``tokenizers/gpt2.json``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from . import resolve_cache_dir

    cached = resolve_cache_dir(cache_dir) / "tokenizers" / "gpt2.json"
    if cached.is_file():
        return load_tokenizer_file(cached)
    path = str(gpt2_tiktoken_path())
    vocab, merges = TikTokenConverter(vocab_file=path).extract_vocab_merges_from_model(path)
    tokenizer = Tokenizer(BPE(vocab, merges, fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens([AddedToken(ENDOFTEXT, normalized=False, special=True)])
    if tokenizer.token_to_id(ENDOFTEXT) != GPT2_EOT_ID:
        raise RuntimeError(f"gpt2 tokenizer: {ENDOFTEXT} got id {tokenizer.token_to_id(ENDOFTEXT)}, not 50256")
    _write_atomic(cached, tokenizer.to_str())
    return _wrap(tokenizer)


def train_bpe(texts, vocab_size: int, path: Path | str | None = None):
    """Train a byte-level BPE of ``vocab_size`` (incl. ``<|endoftext|>`` = id 0) on an iterable of strings.

    With ``path``, the ``tokenizer.json`` is written there and reloaded unchanged on later calls with the
    same path (the caller keys the path by what the tokenizer was trained on).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 257 + 1:
        raise ValueError(f"vocab_size: a byte-level BPE needs at least 258 ids (256 bytes + {ENDOFTEXT}), got {vocab_size}")
    if path is not None and Path(path).is_file():
        return load_tokenizer_file(path)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if path is not None:
        _write_atomic(Path(path), tokenizer.to_str())
    return _wrap(tokenizer)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def load_tokenizer_file(path: Path | str):
    """A transformers fast tokenizer from a ``tokenizer.json`` written by :func:`train_bpe`."""
    from tokenizers import Tokenizer

    return _wrap(Tokenizer.from_file(str(path)))


def texts_fingerprint(texts: dict[str, str]) -> str:
    """Short hash of named texts, to key cached tokenizers and token files by their exact training data."""
    digest = hashlib.sha256(json.dumps(sorted(texts.items())).encode()).hexdigest()
    return digest[:12]
