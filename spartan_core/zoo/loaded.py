"""What loading a model returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["LoadedModel", "to_device"]


@dataclass
class LoadedModel:
    """A model with what belongs to it. ``data`` maps split names to token-block dicts (addition: ``train``,
    ``test``; Shakespeare: ``train``, ``validation``; hub models and SmolLM2: empty). ``history``/``evals`` are
    the per-step training records and evaluations of the run that made the model (post-training for sparse
    models, pretraining for toys; empty for downloaded models)."""

    name: str
    model: Any
    tokenizer: Any
    data: dict[str, dict[str, torch.Tensor]]
    info: dict
    history: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)


def to_device(model, device: str):
    from ..training.config import resolve_device

    return model.to(resolve_device(device))
