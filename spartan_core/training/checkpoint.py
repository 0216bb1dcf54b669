"""Run directories: atomic checkpoints (safetensors weights, optimiser, scheduler, objective, RNG states), the
manifest that says which run a directory holds, the lock that keeps one process per directory, and the JSONL log.
Everything here refuses torn, corrupt or foreign state with one line naming what to delete."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from .._util import check_finite, first_non_finite, model_device, open_lock, write_json, write_jsonl
from .config import TrainConfig, TrainingDiverged

__all__ = ["RunFolder", "RunMismatch", "RunBusy", "CheckpointUnreadable", "Checkpointer", "load_checkpoint_weights",
           "check_checkpoint_fits", "weight_files", "run_manifest", "manifest_difference", "exclusive", "open_run_dir", "read_log",
           "Resumed"]

# TrainConfig fields that change how a run is carried out but not what it learns: a run may resume with others
_UNIDENTIFYING = ("progress", "device", "checkpoint_every", "checkpoint_seconds", "grad_accum",
                  "activation_checkpointing", "fsdp")


@dataclass(frozen=True)
class RunFolder:
    """Where a run keeps its log and checkpoints so that a killed run resumes: ``path``; ``identity``, what besides
    its settings makes it the same run (e.g. a cache key); ``fresh`` discards another run found there instead of
    refusing it (:class:`RunMismatch`)."""

    path: Path
    identity: dict | None = None
    fresh: bool = False

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    def sub(self, name: str) -> RunFolder:
        """The folder of one phase of the run, inside this one."""
        return RunFolder(self.path / name, self.identity, self.fresh)


class RunMismatch(ValueError):
    """An ``out_dir`` holds a run made with other settings; resuming it would silently mix two runs."""


class RunBusy(RuntimeError):
    """Another process is training into the same ``out_dir``."""


class CheckpointUnreadable(ValueError):
    """A checkpoint in ``out_dir`` is torn or corrupt; the message names it and what to delete."""


@dataclass
class Resumed:
    """What a resumed run continues from."""

    step: int
    best_step: int | None
    best_score: float
    records: list[dict]
    wall_time_s: float = 0.0  # training time up to the checkpoint, over every earlier segment of the run

    @classmethod
    def from_checkpoint(cls, info: dict, records: list[dict]) -> Resumed:
        """What a checkpoint's ``trainer.json`` (as :meth:`Checkpointer.load` returns it) says, with the log's
        ``records`` up to its step."""
        return cls(info["step"], info.get("best_step"), info.get("best_score", math.inf), records,
                   float(info.get("wall_time_s", 0.0)))


def open_run_dir(out: Path, manifest: dict, fresh: bool, model, optimizer, scheduler, objective):
    """Resume the run in ``out`` if it is the same run (else refuse), or start one there; returns the
    :class:`Checkpointer`, the log path and :class:`Resumed` (None for a new run)."""
    if fresh:
        _start_fresh(out)
    checkpointer = Checkpointer(out)
    log_path = out / "log.jsonl"
    resumed = None
    latest = checkpointer.latest()
    if latest is not None:
        _check_manifest(out, manifest)
        info = checkpointer.load(latest, model, optimizer, scheduler, objective)
        records = read_log(log_path, info["step"])
        write_jsonl(log_path, records)
        resumed = Resumed.from_checkpoint(info, records)
    elif log_path.exists():
        log_path.unlink()
    write_json(out / "run.json", manifest)
    return checkpointer, log_path, resumed


def _check_manifest(out: Path, wanted: dict) -> None:
    """Refuse to resume a run directory made with other settings."""
    try:
        stored = json.loads((out / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        stored = None
    difference = "its run.json is missing or unreadable" if stored is None else manifest_difference(stored, wanted)
    if difference:
        raise RunMismatch(f"out: {out} holds another run ({difference}); use another directory or start fresh "
                          "(post-train --fresh, a fresh RunFolder), which discards it")


class Checkpointer:
    """``out_dir/checkpoint`` holds the last finite state; a new one is built beside it and swapped in."""

    def __init__(self, out_dir: Path):
        self.dir = out_dir / "checkpoint"
        self.new = out_dir / "checkpoint.new"
        self.old = out_dir / "checkpoint.old"

    def latest(self) -> Path | None:
        for path in (self.dir, self.old):
            if (path / "trainer.json").exists():
                return path
        return None

    def save(self, model, optimizer, scheduler, objective, step: int, extra: dict) -> None:
        """Write the state of ``step``; refuses non-finite weights, so the kept checkpoint is always usable."""
        bad = first_non_finite(model)
        if bad is not None:
            last = self.latest()
            raise TrainingDiverged(f"step {step}: parameter {bad} is not finite; not checkpointed. "
                                   + (f"Last finite checkpoint: {last}" if last else "No checkpoint was written."))
        shutil.rmtree(self.new, ignore_errors=True)
        try:
            self.new.mkdir(parents=True)
            save_model(model, str(self.new / "model.safetensors"))
            torch.save({
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "cpu_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            }, self.new / "trainer.pt")
            with open(self.new / "trainer.json", "w") as f:
                json.dump({"step": step, "objective": objective.state_dict(), **extra}, f)
        except (OSError, RuntimeError) as err:
            shutil.rmtree(self.new, ignore_errors=True)
            free = shutil.disk_usage(self.dir.parent).free
            raise OSError(f"checkpoint: could not write {self.new} ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}); {free / 2**20:.0f} MiB free there "
                          f"(disk full?). The previous checkpoint {self.dir} is intact.") from None
        shutil.rmtree(self.old, ignore_errors=True)
        if self.dir.exists():
            os.replace(self.dir, self.old)
        os.replace(self.new, self.dir)
        shutil.rmtree(self.old, ignore_errors=True)

    def load(self, path: Path, model, optimizer, scheduler, objective) -> dict:
        try:
            with open(path / "trainer.json") as f:
                info = json.load(f)
            check_checkpoint_fits(model, path / "model.safetensors")
            load_model(model, str(path / "model.safetensors"), device=str(model_device(model)))
            state = torch.load(path / "trainer.pt", weights_only=True, map_location="cpu")
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["cpu_rng"])
            if state["cuda_rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            info["step"] = int(info["step"])
        except Exception as err:  # torn or corrupt files raise whatever the reading library raises
            raise CheckpointUnreadable(
                f"checkpoint: {path} cannot be resumed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                f"delete {path.parent} to start over (post-train: --fresh)") from None
        objective.load_state_dict(info.get("objective"))
        return info


def check_checkpoint_fits(model: torch.nn.Module, file: Path) -> None:
    """Compare a safetensors file's tensor names and shapes with ``model`` before loading anything from it."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            stored = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as err:  # safetensors raises its own error types for torn or foreign files
        raise ValueError(f"checkpoint: {file} is not a readable safetensors file ({type(err).__name__})") from None
    wanted = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    for key, shape in stored.items():
        if key in wanted and wanted[key] != shape:
            raise ValueError(f"checkpoint: {file} does not fit this model: {key} is {list(shape)} there, "
                             f"{list(wanted[key])} here (another architecture?)")
    missing = sorted(key for key in set(wanted) - set(stored) if not _tied_partners(model, key) & set(stored))
    unexpected = sorted(set(stored) - set(wanted))
    if missing or unexpected:
        name = (missing or unexpected)[0]
        raise ValueError(f"checkpoint: {file} does not fit this model: tensor {name} is "
                         f"{'missing there' if missing else 'unknown here'} (another architecture?)")


def _tied_partners(model: torch.nn.Module, key: str) -> set[str]:
    """The other state-dict names sharing storage with ``key`` (safetensors stores only one of them)."""
    state = model.state_dict()
    pointer = state[key].data_ptr()
    return {name for name, tensor in state.items() if name != key and tensor.data_ptr() == pointer}


def weight_files(run_dir: Path) -> list[Path]:
    """Where a run directory may hold weights, in the order they are preferred: what the run reported
    (``model.safetensors``), then the last checkpoint (of a plain run, or of a post-train run's GECO phase)."""
    run_dir = Path(run_dir)
    return [run_dir / "model.safetensors", run_dir / "checkpoint" / "model.safetensors",
            run_dir / "geco" / "checkpoint" / "model.safetensors"]


def load_checkpoint_weights(model: torch.nn.Module, path: str | os.PathLike) -> tuple[torch.nn.Module, str]:
    """Load into ``model`` the weights a run directory reports (see :func:`weight_files`), or a .safetensors
    file. Returns the model and the file it read. Shapes are checked before loading and the loaded weights must
    be finite."""
    path = Path(path)
    candidates = weight_files(path) if path.is_dir() else [path]
    file = next((f for f in candidates if f.is_file()), candidates[0])
    if not file.exists():
        raise ValueError(f"checkpoint: no weights at {file}")
    check_checkpoint_fits(model, file)
    load_model(model, str(file), device=str(model_device(model)))
    check_finite(model, "checkpoint")
    return model, str(file)


def read_log(path: Path, upto_step: int) -> list[dict]:
    """The log's records up to ``upto_step``; a torn line (a kill mid-write) is dropped with a warning."""
    if not path.exists():
        return []
    records: list[dict] = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                warnings.warn(f"log: {path} line {number} is torn (a killed write?); ignoring it", stacklevel=3)
    return [r for r in records if isinstance(r, dict) and r.get("step", math.inf) <= upto_step]


def run_manifest(config: TrainConfig, objective, identity: dict | None = None) -> dict:
    """What a run directory is: the settings that change what training produces (model and data from the
    caller's ``identity``, the training recipe, the objective's starting state). Resuming requires an equal
    manifest. A sharded run says so: its checkpoints keep the optimizer state by parameter name, which only a
    sharded run resumes (the key appears only when sharded, so unsharded run directories keep their manifests)."""
    from .distributed import fsdp_requested

    recipe = {k: v for k, v in asdict(config).items() if k not in _UNIDENTIFYING}
    if fsdp_requested(config.fsdp):
        recipe["fsdp"] = True
    payload = {"run": identity or {}, "train": recipe, "objective": objective.manifest() if objective else None}
    return json.loads(json.dumps(payload, default=str))


def manifest_difference(stored: dict, wanted: dict, prefix: str = "") -> str | None:
    """The first setting where two manifests differ, as ``name: stored vs wanted``, or None."""
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key, "<unset>"), wanted.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            found = manifest_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key} is {a!r} there, {b!r} now"
    return None


@contextlib.contextmanager
def exclusive(out: Path):
    """One training process per run directory; a second one is refused at once."""
    with os.fdopen(open_lock(out / ".lock"), "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise RunBusy(f"out: another process (pid {holder}) is training into {out}; "
                          "wait for it or stop it") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _start_fresh(out: Path) -> None:
    for name in ("checkpoint", "checkpoint.new", "checkpoint.old"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("log.jsonl", "best.safetensors", "model.safetensors", "run.json", "config.json", "summary.json"):
        (out / name).unlink(missing_ok=True)


