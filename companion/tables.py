"""What the book's generated tables and the claims ledger both read: which profiles the book reports, the finished
results of a profile, and the markdown of a table cell and of a chapter link. Kept apart from :mod:`.book` so that
the ledger, which the book includes, does not import the book back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .params import GPU_PROFILES
from .results import read_metrics

__all__ = ["BOOK_PROFILES", "GPU_PROFILE", "book_profiles", "profile_results", "cell", "chapter_link",
           "markdown_table",
           "forced_device"]

BOOK_PROFILES = {"tiny": "tiny profile (CPU, this repository)", "paper": "paper profile (GPU)"}
# Shown beside them once it has results: the hour-long default of `make reproduce` on a CUDA machine.
GPU_PROFILE = {"gpu": "gpu profile (one GPU, about an hour)"}


def book_profiles(root: Path) -> dict[str, str]:
    """The profiles the book reports: tiny and paper always, gpu once a run of it has written results."""
    return {**BOOK_PROFILES, **({} if not profile_results(root, "gpu") else GPU_PROFILE)}


def profile_results(root: Path, profile: str) -> list[tuple[str, dict[str, Any]]]:
    """Finished results folders of a profile; dot-names (``.staging``, lock files) belong to runs in progress."""
    folder = Path(root) / profile
    if not folder.is_dir():
        return []
    return [(path.name, read_metrics(path)) for path in sorted(folder.iterdir())
            if not path.name.startswith(".") and (path / "metrics.json").exists()]


def cell(text: str) -> str:
    """One markdown table cell: whitespace folded to single spaces and pipes escaped, so a value keeps its row."""
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A markdown table: the header, then one row per list of values, each value made a cell by :func:`cell`."""
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(cell(value) for value in row) + " |" for row in rows)])


def chapter_link(notebook: str, chapters: set[str]) -> str:
    """The chapter number, linked to its page when the book has it."""
    return f"{{doc}}`{notebook[:2]} </chapters/{notebook}>`" if notebook in chapters else notebook[:2]


def forced_device(profile: str, data: dict[str, Any]) -> str:
    """`` (ran on cpu, forced)`` for a paper-profile result that did not run on CUDA, so it never passes as a GPU
    result; empty otherwise."""
    if profile not in GPU_PROFILES:
        return ""
    kind = data.get("provenance", {}).get("device", {}).get("type")
    return "" if kind == "cuda" else f" (ran on {kind or 'an unknown device'}, forced)"
