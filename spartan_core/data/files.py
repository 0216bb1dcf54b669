"""A user's text file as training data: read, decoded, tokenised and length-checked, with one-line refusals
(``data: ...``, ``seq-len: ...``) for the ways a file can be wrong, before any model is trained or written."""

from __future__ import annotations

from pathlib import Path

from .text import pack_blocks

__all__ = ["read_text_file", "text_file_blocks", "context_length"]


def read_text_file(path: Path) -> str:
    """The data file as text, refused with one line when it is empty, binary or not UTF-8."""
    raw = path.read_bytes()
    if not raw.strip():
        raise ValueError(f"data: {path} is empty")
    if b"\x00" in raw:
        raise ValueError(f"data: {path} looks binary (it contains NUL bytes); expected UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"data: {path} is not UTF-8 text (byte {err.start} cannot be decoded)") from None


def context_length(model) -> int | None:
    """The longest sequence the model's positions allow (None when its config does not say)."""
    config = model.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def text_file_blocks(path: Path, text: str, model_name: str, seq_len: int, tokenizer,
                     context: int | None) -> tuple[dict, dict]:
    """(train blocks, eval blocks) of a checked text file, split 90/10 by position."""
    if context is not None and seq_len > context:
        raise ValueError(f"seq-len: {seq_len} exceeds the model's context of {context} tokens")
    try:
        ids = tokenizer(text)["input_ids"]
    except Exception as err:  # tokenizers raise bare Exceptions for text outside their vocabulary
        raise ValueError(f"data: {path} cannot be tokenised by {model_name}'s tokenizer "
                         f"({str(err).splitlines()[0][:120]})") from None
    unknown = getattr(tokenizer, "unk_token_id", None)
    if unknown is not None and ids and sum(i == unknown for i in ids) > len(ids) / 2:
        raise ValueError(f"data: {path} is mostly unknown tokens for {model_name}'s tokenizer")
    blocks = pack_blocks(ids, seq_len)["input_ids"]
    if blocks.shape[0] < 2:
        raise ValueError(f"data: {path} is too short for two blocks of --seq-len {seq_len} "
                         f"({len(ids)} tokens)")
    cut = max(1, int(blocks.shape[0] * 0.9))
    return {"input_ids": blocks[:cut]}, {"input_ids": blocks[cut:]}
