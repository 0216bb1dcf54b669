"""Small helpers the library needs in many places, written once: atomic writes and JSON lines, eval mode, the
model's device, the weight-health check, the eager-attention switch that ``output_attentions`` needs, and whether
the Hugging Face Hub can be reached (the data and the zoo both ask)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

__all__ = ["open_lock", "file_sha256", "atomic_write_bytes", "atomic_write_text", "write_json", "write_jsonl", "read_jsonl", "eval_mode",
           "model_device", "first_non_finite", "check_finite", "eager_attention", "HubUnavailableError",
           "hub_unavailable_reason"]

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary sibling and ``os.replace``: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; these are ordinary shared files
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def open_lock(path: Path) -> int:
    """A lock file's descriptor (read-write, created if missing, closed on exec), opened without following a
    symbolic link: a link planted at a fixed lock name must not make a run truncate or write its target."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666 & ~_UMASK)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"{path}: is a symbolic link; a lock file must be a plain file (remove the link)") \
                from None
        raise


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, payload, indent: int = 1) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=indent, default=str))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def model_device(model) -> "torch.device":
    return next(model.parameters()).device


def first_non_finite(model) -> str | None:
    """The name of the first parameter or buffer holding a NaN or an infinity, or None."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            return name
    return None


def check_finite(model, what: str = "model") -> None:
    """Refuse a model with non-finite weights or gate bias: its masks and CE would be meaningless (a NaN gate
    logit closes every edge, which reads as perfect sparsity)."""
    from .mechanism.sparsify import sparse_state

    bad = first_non_finite(model)
    if bad is not None:
        raise ValueError(f"{what}: weight {bad} is not finite (NaN or inf); these weights cannot be evaluated")
    state = sparse_state(model)
    if state is not None and math.isnan(state.gate_bias):
        raise ValueError(f"gate_bias: must be a number, got {state.gate_bias!r}")


@contextlib.contextmanager
def eval_mode(model) -> Iterator:
    """``model.eval()`` for the block, then the caller's train/eval mode again."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def eager_attention(model) -> Iterator[None]:
    """``output_attentions`` needs eager (or our gated) attention: switch sdpa/flash models for the block."""
    from .mechanism.sparsify import ATTN_NAME

    previous = model.config._attn_implementation
    switch = previous not in ("eager", ATTN_NAME)
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(previous)


_OFFLINE_VALUES = {"1", "ON", "YES", "TRUE"}


class HubUnavailableError(RuntimeError):
    """The Hugging Face Hub cannot be reached (offline mode or no network); the message is one line."""


def hub_unavailable_reason(timeout_s: float = 3.0) -> str | None:
    """Why the hub cannot be used right now (``None`` if it looks reachable); never waits more than ``timeout_s``."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in _OFFLINE_VALUES:
            return f"{var}={os.environ[var]}"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    host = endpoint.split("://")[-1].split("/")[0]
    outcome: dict[str, str] = {}

    def probe():  # in a thread, so that a slow DNS lookup cannot exceed the deadline either
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout_s).close()
            outcome["ok"] = ""
        except urllib.error.HTTPError:  # the server answered: reachable
            outcome["ok"] = ""
        except (OSError, ValueError) as err:
            outcome["error"] = type(getattr(err, "reason", err)).__name__

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if "ok" in outcome:
        return None
    return f"no connection to {host} ({outcome.get('error', f'no answer within {timeout_s:g} s')})"
