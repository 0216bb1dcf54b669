"""Token-block datasets and their batches: a dict of equal-length tensors (``input_ids`` [N, T], optional
``attention_mask`` and ``labels`` with -100 for unscored tokens). Training rows are a function of (seed, step)
only, so the data position is the step number and a resumed run sees exactly the batches an uninterrupted run
would."""

from __future__ import annotations

import torch

from .._util import model_device
from .config import TrainConfig, autocast_for

__all__ = ["validate_blocks", "iter_batches", "take", "sample_rows", "find_grad_accum"]


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


def take(data: dict, rows: torch.Tensor | slice, device: torch.device) -> dict:
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
        yield take(data, slice(start, start + batch_size), device)


def sample_rows(n: int, size: int, seed: int, step: int) -> torch.Tensor:
    """The rows of one optimiser step: a function of (seed, step) only, so resuming and changing grad_accum
    (to fit memory) leave the batches unchanged."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(n, (size,), generator=generator)


def _is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def find_grad_accum(model: torch.nn.Module, data: dict, config: TrainConfig, objective) -> int:
    """The smallest accumulation factor (a divisor of batch_size) whose micro-batch survives a forward and
    backward pass with the longest rows of ``data``; halves the micro-batch after each out-of-memory error.
    Gradients of the probes are discarded."""
    device = model_device(model)
    divisors = [d for d in range(1, config.batch_size + 1) if config.batch_size % d == 0]
    for accum in divisors:
        micro = config.batch_size // accum
        rows = torch.arange(min(micro, data["input_ids"].shape[0])).repeat(micro)[:micro]
        batch = take(data, rows, device)
        try:
            with autocast_for(device, config.bf16):
                output = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                               labels=batch["labels"], use_cache=False)
                objective.begin_step()
                loss = objective.loss(model, output.loss)
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


