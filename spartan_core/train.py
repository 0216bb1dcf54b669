"""The one training loop: dense pretraining of the toy models and sparse post-training under GECO.

Batches are drawn by seeded random row sampling from a *token-block dataset* (a dict of equal-length tensors:
``input_ids`` [N, T], optional ``attention_mask`` and ``labels`` with -100 for unscored tokens), so the data
position is just the step number and a resumed run sees exactly the batches an uninterrupted run would.
Checkpoints (safetensors weights, optimiser, scheduler, GECO, RNG states) are written atomically; a killed run
resumed from its last checkpoint ends with the same weights as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from .edges import EdgeCounter, EdgeCounts, check_finite, first_non_finite, model_device
from .geco import GECO
from .hf import expected_fraction, layer_stats, sparse_state

__all__ = [
    "TrainConfig", "TrainResult", "TrainingDiverged", "RunMismatch", "RunBusy", "CheckpointUnreadable", "train",
    "evaluate", "resolve_device", "autocast_for", "iter_batches", "validate_blocks", "load_checkpoint_weights",
    "find_grad_accum", "run_manifest", "manifest_difference",
]

# TrainConfig fields that change how a run is carried out but not what it learns: a run may resume with others
_UNIDENTIFYING = ("progress", "device", "checkpoint_every", "checkpoint_seconds", "grad_accum",
                  "activation_checkpointing")


class TrainingDiverged(RuntimeError):
    """The loss or the gradients became NaN or infinite; that step is not applied and the last finite checkpoint
    (if any) is left untouched."""


class RunMismatch(ValueError):
    """An ``out_dir`` holds a run made with other settings; resuming it would silently mix two runs."""


class RunBusy(RuntimeError):
    """Another process is training into the same ``out_dir``."""


class CheckpointUnreadable(ValueError):
    """A checkpoint in ``out_dir`` is torn or corrupt; the message names it and what to delete."""


@dataclass
class TrainConfig:
    steps: int
    batch_size: int = 32
    grad_accum: int | str = 1  # or "auto": the fewest micro-batches that fit in accelerator memory
    lr: float = 3e-4
    schedule: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 0
    eval_batch_size: int = 64
    eval_max_batches: int | None = None
    checkpoint_every: int = 0
    checkpoint_seconds: float = 0.0  # also checkpoint when this much wall time passed since the last one (0: off)
    keep_best: bool = True
    seed: int = 0
    progress: bool = True
    device: str = "auto"
    bf16: bool = True
    activation_checkpointing: bool = False

    def __post_init__(self):
        def positive_int(name, minimum=1):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")

        positive_int("steps")
        positive_int("batch_size")
        if self.grad_accum != "auto":
            positive_int("grad_accum")
        positive_int("eval_batch_size")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "seed"):
            positive_int(name, 0)
        if self.eval_max_batches is not None:
            positive_int("eval_max_batches")
        if self.grad_accum != "auto" and self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size: {self.batch_size} is not divisible by grad_accum={self.grad_accum}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr: must be a positive number, got {self.lr!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule: must be 'cosine' or 'constant', got {self.schedule!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: must be >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.checkpoint_seconds, (int, float)) and self.checkpoint_seconds >= 0):
            raise ValueError(f"checkpoint_seconds: must be a number >= 0, got {self.checkpoint_seconds!r}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip: must be >= 0 (0 disables clipping), got {self.grad_clip!r}")
        resolve_device(self.device)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown training parameter (known: {', '.join(sorted(known))})")
        return cls(**values)


@dataclass
class TrainResult:
    model: torch.nn.Module
    history: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    best_step: int | None = None
    wall_time_s: float = 0.0
    resumed_from: int | None = None


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str):
        raise ValueError(f"device: expected a string such as 'auto', 'cpu' or 'cuda:0', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available (use 'auto' or 'cpu')")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device: {device!r} is not a torch device ({err})") from None
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"device: {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if resolved.type not in ("cpu", "cuda"):
        backend = getattr(torch.backends, resolved.type, None) or getattr(torch, resolved.type, None)
        available = getattr(backend, "is_available", None)
        if available is None or not available():
            raise ValueError(f"device: {device!r} is not available on this machine (use 'auto', 'cpu' or 'cuda')")
    return resolved


def autocast_for(device: torch.device, bf16: bool = True):
    """bf16 autocast on CUDA (where it saves memory and time); full precision on CPU."""
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def validate_blocks(data: dict, name: str = "train_data") -> int:
    """Check a token-block dataset and return its number of rows."""
    if not isinstance(data, dict) or "input_ids" not in data:
        raise ValueError(f"{name}: must be a dict of tensors with 'input_ids' [N, T]")
    ids = data["input_ids"]
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[0] == 0:
        raise ValueError(f"{name}: 'input_ids' must be a non-empty [N, T] tensor")
    for key, value in data.items():
        if isinstance(value, torch.Tensor) and key in ("attention_mask", "labels") and value.shape != ids.shape:
            raise ValueError(f"{name}: '{key}' has shape {tuple(value.shape)}, expected {tuple(ids.shape)}")
    return ids.shape[0]


def _labels(batch: dict) -> torch.Tensor:
    if "labels" in batch:
        return batch["labels"]
    labels = batch["input_ids"].clone()
    if "attention_mask" in batch:
        labels = labels.masked_fill(batch["attention_mask"] == 0, -100)
    return labels


def _take(data: dict, rows: torch.Tensor | slice, device: torch.device) -> dict:
    batch = {k: data[k][rows] for k in ("input_ids", "attention_mask", "labels") if k in data}
    batch["labels"] = _labels(batch)
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def iter_batches(data: dict, batch_size: int, max_batches: int | None = None, device=None):
    """Sequential batches over a token-block dataset (for evaluation and counting)."""
    n = validate_blocks(data, "data")
    device = device or torch.device("cpu")
    for i, start in enumerate(range(0, n, batch_size)):
        if max_batches is not None and i >= max_batches:
            return
        yield _take(data, slice(start, start + batch_size), device)


def _sample_rows(n: int, size: int, seed: int, step: int) -> torch.Tensor:
    """The rows of one optimiser step: a function of (seed, step) only, so resuming and changing grad_accum
    (to fit memory) leave the batches unchanged."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(n, (size,), generator=generator)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: dict, batch_size: int = 64, max_batches: int | None = None,
             bf16: bool = True) -> dict:
    """CE over scored tokens, token and sequence accuracy (argmax of every scored token right: exact match), and,
    for a sparsified model, the edge counts of its deterministic masks, in one pass in eval mode."""
    device = model_device(model)
    counter = EdgeCounter() if sparse_state(model) is not None else None
    was_training = model.training
    model.eval()
    total_loss = total_tokens = correct_tokens = 0.0
    correct_seqs = seqs = 0
    try:
        for batch in iter_batches(data, batch_size, max_batches, device):
            with autocast_for(device, bf16):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                               use_cache=False).logits
            logits = logits[:, :-1].float()
            target = batch["labels"][:, 1:]
            scored = target != -100
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum")
            hits = (logits.argmax(-1) == target) & scored
            total_loss += float(loss)
            total_tokens += float(scored.sum())
            correct_tokens += float(hits.sum())
            has_scored = scored.any(-1)
            correct_seqs += int(((hits | ~scored).all(-1) & has_scored).sum())
            seqs += int(has_scored.sum())
            if counter is not None:
                counter.add(layer_stats(model))
    finally:
        model.train(was_training)
    if total_tokens == 0:
        raise ValueError("data: no scored tokens to evaluate (all labels are -100?)")
    return {
        "ce": total_loss / total_tokens,
        "token_accuracy": correct_tokens / total_tokens,
        "sequence_accuracy": correct_seqs / max(seqs, 1),
        "edges": counter.result() if counter is not None else None,
    }


def _is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def find_grad_accum(model: torch.nn.Module, data: dict, config: TrainConfig, sparse: bool) -> int:
    """The smallest accumulation factor (a divisor of batch_size) whose micro-batch survives a forward and
    backward pass with the longest rows of ``data``; halves the micro-batch after each out-of-memory error.
    Gradients of the probes are discarded."""
    device = model_device(model)
    divisors = [d for d in range(1, config.batch_size + 1) if config.batch_size % d == 0]
    for accum in divisors:
        micro = config.batch_size // accum
        rows = torch.arange(min(micro, data["input_ids"].shape[0])).repeat(micro)[:micro]
        batch = _take(data, rows, device)
        try:
            with autocast_for(device, config.bf16):
                output = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                               labels=batch["labels"], use_cache=False)
                loss = output.loss + (expected_fraction(model) if sparse else 0.0)
            loss.backward()
            return accum
        except RuntimeError as err:
            if not _is_out_of_memory(err):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
        finally:
            model.zero_grad(set_to_none=True)
    raise RuntimeError(f"batch_size: even a micro-batch of 1 row does not fit in memory on {device}")


def _lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine

    return factor


def _write_atomic_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def _open_run_dir(out: Path, manifest: dict, fresh: bool, model, optimizer, scheduler, geco, result, best):
    """Resume the run in ``out`` if it is the same run (else refuse), or start one; returns (checkpointer, log
    path, first step)."""
    if fresh:
        _start_fresh(out)
    checkpointer = _Checkpointer(out)
    log_path = out / "log.jsonl"
    start_step = 0
    latest = checkpointer.latest()
    if latest is not None:
        _check_manifest(out, manifest)
        info = checkpointer.load(latest, model, optimizer, scheduler, geco)
        start_step = info["step"]
        result.resumed_from = start_step
        best.update(kept_fraction=info.get("best_kept_fraction", math.inf), step=info.get("best_step"))
        records = _read_log(log_path, start_step)
        _write_atomic_json_lines(log_path, records)
        result.history = [r for r in records if "ce" in r]
        result.evals = [r for r in records if "eval_ce" in r]
    elif log_path.exists():
        log_path.unlink()
    _write_atomic_json(out / "run.json", manifest)
    return checkpointer, log_path, start_step


def _check_manifest(out: Path, wanted: dict) -> None:
    """Refuse to resume a run directory made with other settings."""
    try:
        stored = json.loads((out / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        stored = None
    difference = "its run.json is missing or unreadable" if stored is None else manifest_difference(stored, wanted)
    if difference:
        raise RunMismatch(f"out: {out} holds another run ({difference}); use another directory or start fresh "
                          "(post-train --fresh, train(fresh=True)), which discards it")


def _write_atomic_json_lines(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    os.replace(tmp, path)


class _Checkpointer:
    """``out_dir/checkpoint`` holds the last good state; a new one is built beside it and swapped in."""

    def __init__(self, out_dir: Path):
        self.dir = out_dir / "checkpoint"
        self.new = out_dir / "checkpoint.new"
        self.old = out_dir / "checkpoint.old"

    def latest(self) -> Path | None:
        for path in (self.dir, self.old):
            if (path / "trainer.json").exists():
                return path
        return None

    def save(self, model, optimizer, scheduler, geco, step: int, extra: dict) -> None:
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
                json.dump({"step": step, "geco": geco.state_dict() if geco else None, **extra}, f)
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

    def load(self, path: Path, model, optimizer, scheduler, geco) -> dict:
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
            step = int(info["step"])
        except Exception as err:  # torn or corrupt files raise whatever the reading library raises
            raise CheckpointUnreadable(
                f"checkpoint: {path} cannot be resumed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                f"delete {path.parent} to start over (post-train: --fresh)") from None
        if geco is not None:
            if info["geco"] is None:
                raise ValueError("geco: the checkpoint to resume was written without GECO")
            geco.load_state_dict(info["geco"])
        info["step"] = step
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


def load_checkpoint_weights(model: torch.nn.Module, path: str | os.PathLike) -> tuple[torch.nn.Module, str]:
    """Load into ``model`` the weights a run directory reports: ``model.safetensors`` (what ``post-train``
    summarised: the best evaluation meeting tau, or the last step) when present, else the last checkpoint; or
    a .safetensors file. Returns the model and the file it read. Shapes are checked before loading and the
    loaded weights must be finite."""
    path = Path(path)
    if path.is_dir():
        file = next((f for f in (path / "model.safetensors", path / "checkpoint" / "model.safetensors")
                     if f.is_file()), path / "checkpoint" / "model.safetensors")
    else:
        file = path
    if not file.exists():
        raise ValueError(f"checkpoint: no weights at {file}")
    check_checkpoint_fits(model, file)
    load_model(model, str(file), device=str(model_device(model)))
    check_finite(model, "checkpoint")
    return model, str(file)


def _read_log(path: Path, upto_step: int) -> list[dict]:
    """The log's records up to ``upto_step``; a torn line (a kill mid-write) is dropped with a warning."""
    if not path.exists():
        return []
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                warnings.warn(f"log: {path} line {number} is torn (a killed write?); ignoring it", stacklevel=3)
    return [r for r in records if isinstance(r, dict) and r.get("step", math.inf) <= upto_step]


def run_manifest(config: TrainConfig, geco: GECO | None, identity: dict | None = None) -> dict:
    """What a run directory is: the settings that change what training produces (model and data from the
    caller's ``identity``, the training recipe, GECO's starting state). Resuming requires an equal manifest."""
    recipe = {k: v for k, v in asdict(config).items() if k not in _UNIDENTIFYING}
    controller = None
    if geco is not None:
        controller = {k: v for k, v in geco.state_dict().items() if k not in ("ce_ema", "steps")}
    return json.loads(json.dumps({"run": identity or {}, "train": recipe, "geco": controller}, default=str))


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
def _exclusive(out: Path):
    """One training process per run directory; a second one is refused at once."""
    with open(out / ".lock", "a+") as handle:
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


def train(
    model: torch.nn.Module,
    train_data: dict,
    *,
    config: TrainConfig,
    eval_data: dict | None = None,
    geco: GECO | None = None,
    out_dir: str | os.PathLike | None = None,
    desc: str = "train",
    on_step: Callable[[dict], None] | None = None,
    identity: dict | None = None,
    fresh: bool = False,
) -> TrainResult:
    """Train ``model`` for ``config.steps`` optimiser steps and return a :class:`TrainResult`.

    With ``geco`` the model must be sparsified and the loss is CE + beta x expected kept fraction; without, plain CE.
    With ``out_dir`` the run logs to ``log.jsonl`` (one record per step, evaluations as ``"eval_*"`` fields),
    checkpoints every ``checkpoint_every`` steps and at the end, and resumes from the last checkpoint there.
    With ``keep_best`` and GECO, the model ends with the weights of the evaluation with the fewest kept edges whose
    deterministic-mask CE met tau (if any did); ``best_step`` names it.

    A run directory knows what it holds (``run.json``: :func:`run_manifest` of the config, GECO and the caller's
    ``identity``, e.g. model and data): resuming with other settings raises :class:`RunMismatch` naming the first
    difference, unless ``fresh`` discards the old run. A step whose loss or gradients are not finite is not
    applied and raises :class:`TrainingDiverged`; non-finite weights are never checkpointed.
    """
    n_rows = validate_blocks(train_data, "train_data")
    if eval_data is not None:
        validate_blocks(eval_data, "eval_data")
    if geco is not None and sparse_state(model) is None:
        raise ValueError("geco: GECO post-training needs a sparsified model (call spartan_core.sparsify(model))")
    device = resolve_device(config.device)
    model.to(device)
    if config.activation_checkpointing:
        # non-reentrant: the gate statistics leave each layer as a side output, which the reentrant variant
        # would detach from the graph (the regulariser would silently get no gradient)
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    grad_accum = config.grad_accum
    if grad_accum == "auto":
        grad_accum = find_grad_accum(model, train_data, config, geco is not None)
    micro_batch = config.batch_size // grad_accum

    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))

    out = Path(out_dir) if out_dir is not None else None
    checkpointer = log_path = None
    result = TrainResult(model=model)
    start_step = 0
    best = {"kept_fraction": math.inf, "step": None, "state": None}
    torch.manual_seed(config.seed)  # sampled gates and dropout; a resumed run restores the checkpoint's RNG states
    held = contextlib.ExitStack()  # the run directory's lock, released however the run ends
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        held.enter_context(_exclusive(out))
        try:
            checkpointer, log_path, start_step = _open_run_dir(
                out, run_manifest(config, geco, identity), fresh, model, optimizer, scheduler, geco, result, best)
        except BaseException:
            held.close()
            raise

    def save_checkpoint(step):
        if checkpointer is not None:
            checkpointer.save(model, optimizer, scheduler, geco, step,
                              {"best_step": best["step"], "best_kept_fraction": best["kept_fraction"]})

    def run_eval(step, record):
        metrics = evaluate(model, eval_data, config.eval_batch_size, config.eval_max_batches, config.bf16)
        record.update(eval_ce=metrics["ce"], eval_token_accuracy=metrics["token_accuracy"],
                      eval_sequence_accuracy=metrics["sequence_accuracy"])
        edges: EdgeCounts | None = metrics["edges"]
        if edges is not None:
            record.update(eval_kept_fraction=edges.kept_fraction, eval_kept_per_query=edges.kept_per_query)
        result.evals.append({k: v for k, v in record.items() if k == "step" or k.startswith("eval_")})
        if (config.keep_best and geco is not None and edges is not None
                and metrics["ce"] <= geco.tau and edges.kept_fraction < best["kept_fraction"]):
            best.update(kept_fraction=edges.kept_fraction, step=step)
            if out is not None:
                save_model(model, str(out / "best.safetensors.tmp"))
                os.replace(out / "best.safetensors.tmp", out / "best.safetensors")
            else:
                best["state"] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    started = last_saved = time.perf_counter()
    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=start_step, desc=desc, dynamic_ncols=True)
    log_file = open(log_path, "a") if log_path is not None else None
    try:
        for step in range(start_step + 1, config.steps + 1):
            model.train()
            t0 = time.perf_counter()
            ce_sum = frac_sum = 0.0
            tokens = 0
            beta = geco.beta if geco is not None else 0.0
            rows = _sample_rows(n_rows, config.batch_size, config.seed, step)
            for micro_rows in rows.split(micro_batch):
                batch = _take(train_data, micro_rows, device)
                with autocast_for(device, config.bf16):
                    output = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                                   labels=batch["labels"], use_cache=False)
                    ce = output.loss.float()
                    loss = ce
                    if geco is not None:
                        fraction = expected_fraction(model)
                        loss = ce + beta * fraction
                        frac_sum += float(fraction.detach())
                if not torch.isfinite(loss):
                    last = checkpointer.latest() if checkpointer else None
                    raise TrainingDiverged(
                        f"step {step}: loss is {float(loss.detach())} (CE {float(ce.detach())}); stopping. "
                        + (f"Last finite checkpoint: {last}." if last else "No checkpoint was written.")
                        + " Try a lower lr or a smaller GECO eta.")
                (loss / grad_accum).backward()
                ce_sum += float(ce.detach())
                tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or math.inf)
            if not torch.isfinite(grad_norm):
                optimizer.zero_grad(set_to_none=True)
                last = checkpointer.latest() if checkpointer else None
                raise TrainingDiverged(
                    f"step {step}: gradient norm is {float(grad_norm)} (CE {ce_sum / grad_accum:.4g}); the step was "
                    "not applied. " + (f"Last finite checkpoint: {last}." if last else "No checkpoint was written.")
                    + " Try a lower lr or a smaller GECO eta.")
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            ce_mean = ce_sum / grad_accum
            record = {"step": step, "ce": ce_mean, "lr": lr}
            if geco is not None:
                geco.update(ce_mean)
                record.update(expected_fraction=frac_sum / grad_accum, beta_used=beta, **geco.log_fields())
            record["tokens_per_s"] = tokens / max(time.perf_counter() - t0, 1e-9)
            if eval_data is not None and (step == config.steps or (config.eval_every and step % config.eval_every == 0)):
                run_eval(step, record)
            result.history.append({k: v for k, v in record.items() if not k.startswith("eval_")})
            if log_file is not None:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            if bar is not None:
                postfix = {"ce": f"{ce_mean:.4f}"}
                if geco is not None:
                    postfix.update(beta=f"{geco.beta:.2e}", frac=f"{record['expected_fraction']:.4f}")
                if "eval_kept_fraction" in record:
                    postfix["eval_kept"] = f"{record['eval_kept_fraction']:.4f}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
            if on_step is not None:
                on_step(record)
            timed = config.checkpoint_seconds and time.perf_counter() - last_saved >= config.checkpoint_seconds
            if step == config.steps or timed or (config.checkpoint_every and step % config.checkpoint_every == 0):
                save_checkpoint(step)
                last_saved = time.perf_counter()
    finally:
        if bar is not None:
            bar.close()
        if log_file is not None:
            log_file.close()
        held.close()
    if config.keep_best and best["step"] is not None:
        if best["state"] is not None:
            model.load_state_dict(best["state"])
        elif out is not None and (out / "best.safetensors").exists():
            load_model(model, str(out / "best.safetensors"), device=str(device))
    result.best_step = best["step"]
    result.wall_time_s = time.perf_counter() - started
    return result
