"""Fixed mask policies: the baselines the learned gate is compared with at an equal number of kept keys per query.

A policy decides which allowed edges a query keeps; everything else is the gate's own path
(:func:`~spartan_core.mechanism.gate.gated_attention`): the softmax over allowed keys times the mask, without
renormalisation, counted by the same edge counter. The budget ``keys_per_query`` k does not depend on the
context length T:

* ``topk``      the k allowed keys with the largest attention weight (exactly min(k, allowed) per query);
* ``window``    the k most recent allowed keys, the query itself included;
* ``sink``      the first allowed key (the "attention sink" at position 0) and the k - 1 most recent;
* ``random``    each allowed key with probability min(1, k / allowed), from a fixed seeded pattern per layer,
                head and position (k in expectation; the pattern does not change between steps, so a model can be
                fine-tuned to it);
* ``threshold`` every key whose attention weight is at least theta, with theta calibrated on data so that the
                mean over queries, heads and layers is k (:func:`calibrate_threshold`).

k at least the context length keeps every edge, which is ordinary dense attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

__all__ = ["POLICIES", "INTEGER_POLICIES", "MaskPolicy", "calibrate_threshold"]

POLICIES = ("topk", "window", "sink", "random", "threshold")
INTEGER_POLICIES = ("topk", "window", "sink")  # their budget is a whole number of keys per query


def _recent_rank(allowed: torch.Tensor) -> torch.Tensor:
    """1 for the most recent allowed key of each row, 2 for the one before ... (0 where not allowed)."""
    return allowed.flip(-1).cumsum(-1).flip(-1) * allowed


@dataclass
class MaskPolicy:
    """One fixed rule for the mask. ``keep(scores, allowed, layer)`` returns the boolean [B, H, Tq, Tk] edges kept
    (a subset of ``allowed``) from the scaled scores q.k/sqrt(d); it never carries a gradient."""

    name: str
    keys_per_query: float
    threshold: float | None = None  # the calibrated attention weight of ``threshold``
    seed: int = 0  # the pattern of ``random``
    _patterns: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if self.name not in POLICIES:
            raise ValueError(f"policy: must be one of {', '.join(POLICIES)}, got {self.name!r}")
        k = self.keys_per_query
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not (k > 0 and math.isfinite(k)):
            raise ValueError(f"keys_per_query: must be a positive number of keys, got {k!r}")
        if self.name in INTEGER_POLICIES and k != int(k):
            raise ValueError(f"keys_per_query: the {self.name} policy keeps a whole number of keys, got {k!r}")
        if self.name == "sink" and k < 1:
            raise ValueError(f"keys_per_query: the sink policy keeps at least the sink, got {k!r}")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold: an attention weight in [0, 1], got {self.threshold!r}")

    def to_dict(self) -> dict:
        return {"name": self.name, "keys_per_query": self.keys_per_query, "threshold": self.threshold,
                "seed": self.seed}

    @torch.no_grad()
    def keep(self, scores: torch.Tensor, allowed: torch.Tensor, layer: int) -> torch.Tensor:
        allowed = allowed.expand(scores.shape)
        k = self.keys_per_query
        if self.name == "topk":
            count = min(int(k), scores.shape[-1])
            ranked = scores.masked_fill(~allowed, -math.inf).topk(count, dim=-1).indices
            return torch.zeros_like(allowed).scatter_(-1, ranked, True) & allowed
        if self.name == "window":
            return allowed & (_recent_rank(allowed) <= k)
        if self.name == "sink":
            first = allowed & (allowed.cumsum(-1) == 1)
            return first | (allowed & (_recent_rank(allowed) <= k - 1))
        if self.name == "random":
            rows = allowed.sum(-1, keepdim=True).clamp_min(1)
            return allowed & (self._pattern(layer, scores) < k / rows)
        if self.threshold is None:
            raise ValueError("threshold: the threshold policy is not calibrated (call calibrate_threshold)")
        probs = torch.softmax(scores.masked_fill(~allowed, -math.inf), dim=-1)
        return allowed & (probs >= self.threshold)

    def _pattern(self, layer: int, scores: torch.Tensor) -> torch.Tensor:
        """Uniform [H, Tq, Tk] numbers fixed by (seed, layer, head, query position, key position)."""
        heads, q_len, k_len = scores.shape[1:]
        key = (layer, heads, k_len, scores.device)
        if key not in self._patterns:
            generator = torch.Generator().manual_seed(self.seed * 7919 + layer)
            self._patterns[key] = torch.rand(heads, k_len, k_len, generator=generator).to(scores.device)
        return self._patterns[key][:, k_len - q_len:]


@torch.no_grad()
def calibrate_threshold(model: torch.nn.Module, batches, keys_per_query: float) -> float:
    """The attention weight theta at which the threshold policy keeps ``keys_per_query`` keys per query, on
    average over the (query, head, layer) rows of ``batches`` of the sparsified ``model``: the (k x rows)-th
    largest allowed attention weight."""
    from .sparsify import sparse_state

    state = sparse_state(model)
    if state is None:
        raise ValueError("model is dense: call spartan_core.sparsify(model) first")
    recorder = _WeightRecorder()
    before, state.policy = state.policy, recorder
    try:
        for batch in batches:
            model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False)
    finally:
        state.policy = before
    if not recorder.rows:
        raise ValueError("batches: no query rows to calibrate the threshold on")
    weights = torch.cat(recorder.weights)
    rank = min(int(round(keys_per_query * recorder.rows)), weights.numel())
    if rank < 1:
        return 1.0
    return float(weights.topk(rank).values[-1])


class _WeightRecorder:
    """A policy that keeps every edge and records the allowed attention weights (for calibration)."""

    def __init__(self):
        self.weights: list[torch.Tensor] = []
        self.rows = 0

    def keep(self, scores, allowed, layer):
        allowed = allowed.expand(scores.shape)
        probs = torch.softmax(scores.float().masked_fill(~allowed, -math.inf), dim=-1)
        self.weights.append(probs[allowed].cpu())
        self.rows += int(allowed.any(-1).sum())
        return allowed
