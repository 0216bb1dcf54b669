"""Counting kept token->token attention edges of a sparsified model, streamed over batches.

These are edges *inside* a head (what sparsification removes; the paper's 0.3 % figure), not the
component->component circuit edges of :mod:`spartan_core.circuits`. The fraction depends on context length,
so the T-independent mean number of kept keys per query is reported beside it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from .._util import check_finite, model_device
from .gate import GateStats
from .sparsify import layer_stats, sparse_state

__all__ = ["EdgeCounts", "EdgeCounter", "count_edges"]


@dataclass
class EdgeCounts:
    """Aggregated edge counts. Fractions are kept / possible causal (non-padding) edges."""

    kept_fraction: float
    per_layer: list[float]
    per_head: list[list[float]]
    kept_per_query: float
    kept_per_query_per_layer: list[float]
    by_position: list[float]  # mean kept keys per query, by query position (over layers and heads)
    fraction_by_position: list[float]  # kept / possible edges, by query position
    kept: int
    possible: int
    queries: int  # real query rows per head, summed over batches

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict) -> "EdgeCounts":
        return cls(**data)


class EdgeCounter:
    """Adds up :class:`GateStats` of successive forward passes in fixed-size float64 buffers (memory does not
    grow with the number of batches, only with the longest context seen)."""

    def __init__(self):
        self.kept: torch.Tensor | None = None  # [L, H]
        self.possible: torch.Tensor | None = None
        self.queries = 0.0
        self.kept_by_position = torch.zeros(0, dtype=torch.float64)
        self.queries_by_position = torch.zeros(0, dtype=torch.float64)
        self.possible_by_position = torch.zeros(0, dtype=torch.float64)

    def add(self, stats: list[GateStats]) -> None:
        kept = torch.stack([s.kept.detach().cpu() for s in stats])
        possible = torch.stack([s.possible.detach().cpu() for s in stats])
        if self.kept is None:
            self.kept, self.possible = kept.clone(), possible.clone()
        else:
            self.kept += kept
            self.possible += possible
        self.queries += float(stats[0].queries)
        for s in stats:
            self.kept_by_position = _add_padded(self.kept_by_position, s.kept_by_position)
            self.queries_by_position = _add_padded(self.queries_by_position, s.queries_by_position)
            self.possible_by_position = _add_padded(self.possible_by_position, s.possible_by_position)

    def result(self) -> EdgeCounts:
        if self.kept is None:
            raise ValueError("batches: no batch was counted (empty iterable?)")
        layers, heads = self.kept.shape
        possible = self.possible.clamp_min(1)
        head_queries = max(self.queries * heads, 1.0)
        kept_per_query_per_layer = (self.kept.sum(1) / head_queries).tolist()
        return EdgeCounts(
            kept_fraction=float(self.kept.sum() / possible.sum()),
            per_layer=(self.kept.sum(1) / possible.sum(1)).tolist(),
            per_head=(self.kept / possible).tolist(),
            kept_per_query=sum(kept_per_query_per_layer) / layers,
            kept_per_query_per_layer=kept_per_query_per_layer,
            by_position=(self.kept_by_position / self.queries_by_position.clamp_min(1)).tolist(),
            fraction_by_position=(self.kept_by_position / self.possible_by_position.clamp_min(1)).tolist(),
            kept=int(self.kept.sum()),
            possible=int(self.possible.sum()),
            queries=int(self.queries),
        )


def _add_padded(total: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    part = part.detach().cpu().double()
    if part.numel() > total.numel():
        total = torch.cat([total, torch.zeros(part.numel() - total.numel(), dtype=total.dtype)])
    total[: part.numel()] += part
    return total


@torch.no_grad()
def count_edges(model: torch.nn.Module, batches: Iterable[dict], *, progress: bool = False) -> EdgeCounts:
    """Count kept edges of the deterministic (evaluation) masks of a sparsified ``model`` over ``batches``.

    ``batches`` is any iterable of dicts with ``input_ids`` [B, T] and optionally ``attention_mask`` [B, T].
    The model is put in eval mode for the count and restored afterwards.
    """
    if sparse_state(model) is None:
        raise ValueError("model: count_edges needs a sparsified model (spartan_core.sparsify(model))")
    check_finite(model)
    device = model_device(model)
    counter = EdgeCounter()
    was_training = model.training
    model.eval()
    try:
        iterator = batches
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(batches, desc="count edges", leave=False)
        for batch in iterator:
            mask = batch.get("attention_mask")
            model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=None if mask is None else mask.to(device),
                use_cache=False,
            )
            counter.add(layer_stats(model))
    finally:
        model.train(was_training)
    return counter.result()
