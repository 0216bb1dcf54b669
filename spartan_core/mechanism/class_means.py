"""Attention averaged per class of input: for each class of rows (a carry class of addition problems, say), the
mean attention weight of every edge and how often the edge is kept (non-zero), accumulated over batches of maps
(:func:`attention_by_class` runs a model over the rows in batches).
For a sparsified model "kept" is the gate's deterministic mask; for a dense model every causal edge is kept."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from .attention import attention_maps

__all__ = ["ClassMeans", "class_means_of", "attention_by_class"]


@dataclass
class ClassMeans:
    """Per-class averages over a dataset: ``weight`` [G, L, H, T, T] mean attention weight, ``kept`` the fraction
    of rows in which the edge's weight is non-zero, ``count`` [G] rows per class."""

    weight: torch.Tensor
    kept: torch.Tensor
    count: torch.Tensor

    def pooled(self, classes: Sequence[int], measure: str = "weight") -> torch.Tensor:
        """[L, H, T, T] average of ``measure`` over the rows of the listed classes (rows weighted equally)."""
        if measure not in ("weight", "kept"):
            raise ValueError(f"measure: expected 'weight' or 'kept', got {measure!r}")
        values = getattr(self, measure)
        index = torch.as_tensor(list(classes), dtype=torch.long)
        counts = self.count[index].double()
        if counts.sum() == 0:
            return torch.full(values.shape[1:], float("nan"), dtype=torch.float64)
        return (values[index].double() * counts[:, None, None, None, None]).sum(0) / counts.sum()

    def overall(self, measure: str = "weight") -> torch.Tensor:
        return self.pooled(range(len(self.count)), measure)


def class_means_of(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], n_classes: int) -> ClassMeans:
    """Average attention weights and kept-edge frequencies per class over ``batches`` of (maps [B, L, H, T, T],
    classes [B] in 0..n_classes-1)."""
    weight_sum = kept_sum = None
    count = torch.zeros(n_classes, dtype=torch.float64)
    for maps, classes in batches:
        if len(classes) != len(maps):
            raise ValueError(f"classes: need one class per row ({len(maps)}), got {len(classes)}")
        if len(classes) and (int(classes.min()) < 0 or int(classes.max()) >= n_classes):
            raise ValueError(f"classes: values must lie in 0..{n_classes - 1}")
        maps, group = maps.double(), classes.long()
        if weight_sum is None:
            weight_sum = torch.zeros(n_classes, *maps.shape[1:], dtype=torch.float64)
            kept_sum = torch.zeros_like(weight_sum)
        weight_sum.index_add_(0, group, maps)
        kept_sum.index_add_(0, group, (maps > 0).double())
        count += torch.bincount(group, minlength=n_classes).double()
    if weight_sum is None:
        raise ValueError("batches: no rows to average")
    denominator = count.clamp_min(1)[:, None, None, None, None]
    return ClassMeans(weight=weight_sum / denominator, kept=kept_sum / denominator, count=count)


@torch.no_grad()
def attention_by_class(model, input_ids: torch.Tensor, classes: torch.Tensor, n_classes: int,
                       batch_size: int = 500) -> ClassMeans:
    """Average attention weights and kept-edge frequencies per class over all rows of ``input_ids`` [N, T]
    (``classes`` [N] in 0..n_classes-1), streamed in batches of ``batch_size``."""
    if len(classes) != len(input_ids):
        raise ValueError(f"classes: need one class per row ({len(input_ids)}), got {len(classes)}")
    starts = range(0, len(input_ids), batch_size)
    return class_means_of(((attention_maps(model, input_ids[s:s + batch_size]), classes[s:s + batch_size])
                           for s in starts), n_classes)
