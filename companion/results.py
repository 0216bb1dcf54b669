"""The one results writer: ``results/<profile>/<notebook>/{metrics.json, *.csv, *.png}``.

A run writes into ``results/<profile>/.staging/<notebook>/`` and :meth:`ResultsDir.finish` swaps that folder
into place in one step, so a killed or failed rerun never destroys the previous complete results (what it had
recorded is left in the staging folder, which the next run clears). Every file is written atomically (a temporary
file in the same folder, then ``os.replace``), and ``metrics.json`` is merged key by key on every write. It carries
the provenance of the run that wrote it: git commit and dirty flag, profile, parameters, device, library versions,
start time, wall time and status.

One run per results folder at a time: the first write takes an exclusive ``flock`` on
``results/<profile>/.<notebook>.lock`` (held until :meth:`finish`, released by the kernel when the process dies);
a second run refuses with :class:`ResultsBusy`. The notebook runner holds that lock itself for the whole run and
tells the kernel so through env ``SPARTAN_RESULTS_LOCK_HELD=<profile>/<notebook>``.

Nothing touches the disk until the first write: a notebook can build its :class:`ResultsDir` while validating
its parameters and still leave ``results/`` untouched when they are refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import errno
import fcntl
import functools
import io
import json
import math
import os
import platform
import shutil
import subprocess
import time
import weakref
from pathlib import Path
from typing import Any, Mapping

from spartan_core._util import atomic_write_bytes, atomic_write_text, open_lock
from spartan_core.claims import Claim

__all__ = [
    "REPO_ROOT",
    "LOCK_HELD_ENV",
    "ResultsBusy",
    "ResultsDir",
    "ResultsLock",
    "results_root",
    "provenance",
    "read_metrics",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCK_HELD_ENV = "SPARTAN_RESULTS_LOCK_HELD"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# What runs themselves rewrite: "modified" in a provenance record means the code or parameters differ from the
# commit, not that earlier results or chapters were refreshed.
_RUN_OUTPUTS = ("results", "book/chapters", "README.md", "models")


def results_root() -> Path:
    """Where results live: env ``SPARTAN_RESULTS`` (tests point it at a temporary folder), else ``<repo>/results``."""
    return Path(os.environ.get("SPARTAN_RESULTS") or REPO_ROOT / "results")


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

    from spartan_core.training.config import describe_machine

    machine = describe_machine()
    device = {"type": machine["device"], "name": machine["device_name"], "threads": machine["threads"]}
    if machine["device"] == "cuda":
        device["count"] = torch.cuda.device_count()
    return device


def _models_used(since: int) -> list[dict[str, Any]]:
    """Provenance of the models this process loaded through the zoo since index ``since`` (none when the
    notebook never imported it)."""
    import sys

    zoo = sys.modules.get("spartan_core.zoo")
    return zoo.used_models(since) if zoo is not None else []


def _models_count() -> int:
    return len(_models_used(0))


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


def _shown(path: Path) -> str:
    path = Path(path)
    return path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path)


class ResultsBusy(RuntimeError):
    """Another live process is writing the same results folder; the message is one line naming folder and pid."""


class ResultsLock:
    """The exclusive, non-blocking ``flock`` on ``results/<profile>/.<notebook>.lock`` that makes one run per
    results folder. flock is released by the kernel when the holder dies, so a killed run leaves no stale lock;
    the file keeps the holder's pid for the message of a refused run."""

    def __init__(self, profile: str, notebook: str, root: Path | None = None):
        root = Path(root or results_root())
        self.path = root / profile / f".{notebook}.lock"
        self.folder = root / profile / notebook
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "ResultsLock":
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_lock(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ResultsBusy(f"results: another run is writing {_shown(self.folder)} (pid {holder}); "
                              "wait for it or stop it") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Closing the descriptor drops the lock; the file stays (unlinking a lock file races with its takers)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> "ResultsLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


@functools.lru_cache(maxsize=1)
def _renameat2():
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False where the libc,
    the kernel or the file system lacks it."""
    func = _renameat2()
    if func is None:
        return False
    if func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap_into_place(staging: Path, final: Path) -> None:
    """Make ``staging`` the folder at ``final`` and delete the folder it replaces. Readers see the old folder or
    the new one; only the fallback (no ``renameat2``) has a moment with neither, which :func:`_recover` repairs
    if the process dies in it."""
    if not final.exists():
        os.rename(staging, final)
        return
    if _exchange(staging, final):
        shutil.rmtree(staging)
        return
    old = _old_path(staging)
    if old.exists():
        shutil.rmtree(old)
    os.rename(final, old)
    os.rename(staging, final)
    shutil.rmtree(old)


def _old_path(staging: Path) -> Path:
    return staging.with_name(staging.name + ".old")


def _recover(staging: Path, final: Path) -> None:
    """Undo what a run killed inside the fallback swap left: the previous folder parked at ``<staging>.old``."""
    old = _old_path(staging)
    if old.exists():
        if final.exists():
            shutil.rmtree(old)
        else:
            os.rename(old, final)


# The ResultsDir of this process that holds each lock: a rerun in the same kernel (a notebook run again after a
# failed cell, whose traceback may keep the old ResultsDir alive) takes the lock over instead of refusing itself.
_HOLDERS: "weakref.WeakValueDictionary[Path, ResultsDir]" = weakref.WeakValueDictionary()


class ResultsDir:
    """Results of one notebook run under one profile.

    ``record(**metrics)`` merges keys into ``metrics.json``; ``table(name, df)`` writes ``name.csv``;
    ``figure(fig, name)`` writes ``name.png``; ``claim(Claim)`` records a study's answer to a claim, which the
    book's ledger shows; ``finish()`` marks the run complete and puts its folder in place of the
    previous run's, so a folder never mixes two runs. ``path`` is that final folder; writes go to
    ``staging_path`` until then.
    """

    def __init__(self, profile: str, notebook: str, parameters: Mapping[str, Any] | None = None,
                 root: Path | None = None):
        root = Path(root or results_root())
        self.profile = profile
        self.notebook = notebook
        self.parameters = dict(parameters or {})
        self.path = root / profile / notebook
        self.staging_path = root / profile / ".staging" / notebook
        self._lock = ResultsLock(profile, notebook, root)
        self._created = time.perf_counter()
        self._models_since = _models_count()
        self._started = False
        self._finished = False
        self._superseded = False

    @property
    def metrics_path(self) -> Path:
        return self.staging_path / "metrics.json"

    def _take_lock(self) -> None:
        if os.environ.get(LOCK_HELD_ENV) == f"{self.profile}/{self.notebook}":
            return
        key = self._lock.path.resolve()
        earlier = _HOLDERS.get(key)
        if earlier is not None and earlier is not self and earlier._lock.held:
            self._lock, earlier._lock = earlier._lock, self._lock
            earlier._superseded = True
        else:
            self._lock.acquire()
        _HOLDERS[key] = self

    def _begin(self) -> None:
        if self._finished or self._superseded:
            why = "is finished" if self._finished else "was taken over by a newer run in this process"
            raise RuntimeError(f"results: this run of {_shown(self.path)} {why}; start a new ResultsDir to write")
        if self._started:
            return
        self._take_lock()
        _recover(self.staging_path, self.path)
        if self.staging_path.exists():
            shutil.rmtree(self.staging_path)
        self.staging_path.mkdir(parents=True)
        self._started = True
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

    def claim(self, claim: Claim) -> None:
        """Record this run's answer to a claim of the paper (an id of ``book/claims.yaml``): the study's sentence,
        verdict, rule and the values they rest on, as the study built them."""
        if not isinstance(claim, Claim):
            raise ValueError(f"claim: expected a spartan_core.claims.Claim, got {type(claim).__name__}")
        self._update("claims", {claim.id: claim.to_record()})

    def _file(self, name: str, suffix: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"name: {name!r} is not a plain file name")
        return self.staging_path / (name if name.endswith(suffix) else name + suffix)

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
        """Mark the run complete and swap its folder into place; returns the final metrics.json content."""
        self._begin()
        data = read_metrics(self.metrics_path)
        data["provenance"]["status"] = "complete"
        data["provenance"]["wall_time_s"] = round(time.perf_counter() - self._created, 3)
        data["provenance"]["finished_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        data["provenance"]["models"] = _jsonable(_models_used(self._models_since))
        self._write_metrics(data)
        _swap_into_place(self.staging_path, self.path)
        with contextlib.suppress(OSError):
            self.staging_path.parent.rmdir()  # only when no other notebook of the profile is staging
        self._finished = True
        self._lock.release()
        return data

    def __repr__(self) -> str:
        return f"ResultsDir({str(self.path)!r})"

