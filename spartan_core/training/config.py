"""What a training run is: :class:`TrainConfig` (validated, every field one line), the devices it may run on,
the learning-rate schedule, and the result and errors a run can end with."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "resolve_device", "autocast_for", "lr_factor",
           "torch_threads", "describe_machine"]


class TrainingDiverged(RuntimeError):
    """The loss or the gradients became NaN or infinite; that step is not applied and the last finite checkpoint
    (if any) is left untouched."""


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
    threads: int | None = None  # torch CPU threads while training (None: leave as set); they change the weights
    progress: bool = True
    device: str = "auto"
    bf16: bool = True
    activation_checkpointing: bool = False
    fsdp: bool = False  # shard the weights over the launched processes (also: accelerate launch --use_fsdp)

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
        if self.threads is not None:
            positive_int("threads")
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
    wall_time_s: float = 0.0  # training time; a resumed run adds the time its earlier segments took to checkpoint
    resumed_from: int | None = None
    machine: dict = field(default_factory=dict)  # where it trained: describe_machine() during the run


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


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run with ``threads`` torch CPU threads (None: unchanged), restored afterwards. CPU matrix products split
    their sums by thread, so the same seed trains bit-identical weights only at the same thread count."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def describe_machine(device: torch.device | str | None = None) -> dict:
    """What a result depends on beyond its seed: device type and name (CPU model or GPU), torch CPU threads, and
    the torch version. Hostname-free, since results are committed."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device is None else torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model()
    return {"device": device.type, "device_name": name, "threads": torch.get_num_threads(), "torch": torch.__version__}


def lr_factor(config: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine

    return factor


