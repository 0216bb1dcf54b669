"""Attention as a model computes it, for reading: every head's map on a batch of tokens (the kept weights of a
sparsified model), and the heads whose score reaches a threshold."""

from __future__ import annotations

import torch

from .._util import eager_attention, eval_mode, model_device

__all__ = ["attention_maps", "heads_at_or_above"]


@torch.no_grad()
def attention_maps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Float [B, layers, heads, T, T] attention weights (CPU) in eval mode; kept weights for a sparsified model.
    Grouped-query models report one map per query head."""
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids: expected [batch, time], got shape {tuple(input_ids.shape)}")
    device = model_device(model)
    with eval_mode(model), eager_attention(model):
        out = model(input_ids=input_ids.to(device), output_attentions=True, use_cache=False,
                    attention_mask=None if attention_mask is None else attention_mask.to(device))
    return torch.stack([a.float().cpu() for a in out.attentions], dim=1)


def heads_at_or_above(scores: torch.Tensor, threshold: float) -> list[tuple[int, int]]:
    """(layer, head) of every head of ``scores`` [layers, heads] at or above ``threshold``, strongest first."""
    flat = [(float(scores[layer, head]), layer, head)
            for layer in range(scores.shape[0]) for head in range(scores.shape[1])]
    return [(layer, head) for score, layer, head in sorted(flat, key=lambda t: (-t[0], t[1], t[2]))
            if score >= threshold]
