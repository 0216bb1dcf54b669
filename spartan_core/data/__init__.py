"""Corpora and tasks, all available offline: the addition toy, Shakespeare and KJV text, the standard library's
Python sources (:mod:`.code`), hub text, induction.

Every dataset is a *token-block dict* (the format ``spartan_core.training.train`` consumes): ``input_ids`` [N, T]
(long), optionally ``attention_mask`` and ``labels`` (-100 = not scored; aligned with ``input_ids``, the model
shifts them). Some datasets add 1-D metadata columns (e.g. the addition toy's ``carry``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["resolve_cache_dir"]


def resolve_cache_dir(cache_dir: Path | str | None = None) -> Path:
    """The cache directory: ``cache_dir`` if given, else ``$SPARTAN_CACHE``, else ``<repo>/.cache``."""
    if cache_dir is None:
        cache_dir = os.environ.get("SPARTAN_CACHE") or Path(__file__).resolve().parents[2] / ".cache"
    path = Path(cache_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"SPARTAN_CACHE: {path} is a file, not a directory; point it at a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"SPARTAN_CACHE: cannot create {path} ({err.strerror})") from None
    return path
