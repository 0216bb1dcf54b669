"""The one results writer: ``results/<profile>/<notebook>/{metrics.json, *.csv, *.png}``.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so a reader never
sees half a file. ``metrics.json`` is merged key by key on every write, so a run that is killed keeps what it
had recorded so far, and it carries the provenance of the run that wrote it: git commit and dirty flag, profile,
parameters, device, library versions, start time, wall time and status (``running`` until :meth:`finish`).

Nothing touches the disk until the first write: a notebook can build its :class:`ResultsDir` while validating
its parameters and still leave ``results/`` untouched when they are refused.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "REPO_ROOT",
    "ResultsDir",
    "results_root",
    "provenance",
    "atomic_write_bytes",
    "atomic_write_text",
    "read_metrics",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
_OWNED_SUFFIXES = (".json", ".csv", ".png")
# What runs themselves rewrite: "modified" in a provenance record means the code or parameters differ from the
# commit, not that earlier results or chapters were refreshed.
_RUN_OUTPUTS = ("results", "book/chapters", "README.md")
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def results_root() -> Path:
    """Where results live: env ``SPARTAN_RESULTS`` (tests point it at a temporary folder), else ``<repo>/results``."""
    return Path(os.environ.get("SPARTAN_RESULTS") or REPO_ROOT / "results")


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary sibling and ``os.replace``: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are ordinary shared files
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _device() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        return {"type": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    return {"type": "cpu", "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "spartan_core": _package_version(),
    }


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spartan_core")
    except PackageNotFoundError:
        return "unknown"


def provenance(profile: str, notebook: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Where a result came from. Deliberately hostname-free: results are committed and shared."""
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *(f":!{p}" for p in _RUN_OUTPUTS))
    return {
        "profile": profile,
        "notebook": notebook,
        "parameters": _jsonable(dict(parameters)),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "device": _device(),
        "versions": _versions(),
        "platform": f"{platform.system()} {platform.machine()}",
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _jsonable(value: Any) -> Any:
    """Plain JSON types for numpy/torch scalars, tuples, paths; NaN/inf become strings (JSON has neither)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return _jsonable(value.item())
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    raise TypeError(f"cannot store {type(value).__name__} in metrics.json")


def read_metrics(path: Path) -> dict[str, Any]:
    """The parsed ``metrics.json`` of a results folder (or the file itself); empty when there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text())


class ResultsDir:
    """Results of one notebook run under one profile.

    ``record(**metrics)`` merges keys into ``metrics.json``; ``table(name, df)`` writes ``name.csv``;
    ``figure(fig, name)`` writes ``name.png``; ``claim(claim_id, summary, **values)`` records a measurement the
    book's table of claims shows; ``finish()`` marks the run complete. The first write of a run clears the files
    an earlier run left in the folder, so a folder never mixes two runs.
    """

    def __init__(self, profile: str, notebook: str, parameters: Mapping[str, Any] | None = None,
                 root: Path | None = None):
        self.profile = profile
        self.notebook = notebook
        self.parameters = dict(parameters or {})
        self.path = Path(root or results_root()) / profile / notebook
        self._created = time.perf_counter()
        self._started = False

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    def _begin(self) -> None:
        if self._started:
            return
        self._started = True
        if self.path.exists():
            for stale in self.path.iterdir():
                if stale.is_file() and stale.suffix in _OWNED_SUFFIXES:
                    stale.unlink()
        self._write_metrics({
            "provenance": {**provenance(self.profile, self.notebook, self.parameters), "status": "running"},
            "metrics": {},
            "claims": {},
            "files": [],
        })

    def _write_metrics(self, data: dict[str, Any]) -> None:
        atomic_write_text(self.metrics_path, json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")

    def _update(self, section: str, values: Mapping[str, Any]) -> dict[str, Any]:
        self._begin()
        data = read_metrics(self.metrics_path)
        if section == "files":
            data["files"] = sorted(set(data.get("files", [])) | set(values))
        else:
            data.setdefault(section, {}).update(_jsonable(dict(values)))
        data["provenance"]["wall_time_s"] = round(time.perf_counter() - self._created, 3)
        self._write_metrics(data)
        return data

    def record(self, **metrics: Any) -> None:
        """Merge ``metrics`` into metrics.json (numbers, strings, lists, nested dicts)."""
        self._update("metrics", metrics)

    def claim(self, claim_id: str, summary: str, **values: Any) -> None:
        """Record this run's measurement for a claim of the paper (see ``book/claims.yaml``).

        ``summary`` is the sentence shown in the book's table; build it from measured values, never by hand.
        """
        self._update("claims", {claim_id: {"summary": summary, **values}})

    def _file(self, name: str, suffix: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"name: {name!r} is not a plain file name")
        return self.path / (name if name.endswith(suffix) else name + suffix)

    def table(self, name: str, frame) -> Path:
        """Write a pandas DataFrame as ``name.csv`` (no index column unless it is named)."""
        path = self._file(name, ".csv")
        self._begin()
        keep_index = any(n is not None for n in frame.index.names)
        atomic_write_text(path, frame.to_csv(index=keep_index))
        self._update("files", [path.name])
        return path

    def figure(self, fig, name: str, dpi: int = 120) -> Path:
        """Write a matplotlib figure as ``name.png`` (metadata stripped so reruns give stable bytes)."""
        path = self._file(name, ".png")
        self._begin()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
        atomic_write_bytes(path, buffer.getvalue())
        self._update("files", [path.name])
        return path

    def finish(self) -> dict[str, Any]:
        """Mark the run complete; returns the final metrics.json content."""
        self._begin()
        data = read_metrics(self.metrics_path)
        data["provenance"]["status"] = "complete"
        data["provenance"]["wall_time_s"] = round(time.perf_counter() - self._created, 3)
        data["provenance"]["finished_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self._write_metrics(data)
        return data

    def __repr__(self) -> str:
        return f"ResultsDir({str(self.path)!r})"

