"""Whole attention heads, one at a time: how much a loss rises when one head is mean-ablated, and how many heads
carry a score without a threshold. A count of heads "at or above 0.3" moves with the threshold; these two do not.

Mean ablation replaces head h's share of the attention output projection's input (its value-weighted sum, before
the projection mixes heads) by its mean over every position of the data, so the head stops reading the tokens but
keeps its average write; zeroing it instead would also remove that average, which can hurt a model through no
behaviour of the head's own.
"""

from __future__ import annotations

import contextlib

import torch

from .._util import model_device
from ..training.evaluate import evaluate
from .graph import find_layers

__all__ = ["head_ablation_effects", "effective_heads", "heads_above"]


@contextlib.contextmanager
def _replaced(o_proj: torch.nn.Module, columns: slice, value: torch.Tensor):
    """While open, the input columns ``columns`` of ``o_proj`` read ``value`` at every position."""
    def hook(module, args):
        x = args[0].clone()
        x[..., columns] = value.to(x.dtype)
        return (x, *args[1:])

    handle = o_proj.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def _head_means(model, layers, data: dict, batch_size: int) -> tuple[list[torch.Tensor], float]:
    """Per layer, the mean over the data's positions of the output projection's input [heads x head_dim], and the
    intact model's CE, from one evaluation."""
    sums, count = [None] * len(layers), [0]

    def recorder(index):
        def hook(module, args):
            flat = args[0].detach().float().reshape(-1, args[0].shape[-1])
            sums[index] = flat.sum(0) if sums[index] is None else sums[index] + flat.sum(0)
            if index == 0:
                count[0] += flat.shape[0]
        return hook

    handles = [layer.o_proj.register_forward_pre_hook(recorder(i)) for i, layer in enumerate(layers)]
    try:
        intact = evaluate(model, data, batch_size).ce
    finally:
        for handle in handles:
            handle.remove()
    return [total / count[0] for total in sums], intact


@torch.no_grad()
def head_ablation_effects(model, data: dict, batch_size: int = 32) -> torch.Tensor:
    """Float [layers, heads]: the CE on ``data``'s labels with that one head mean-ablated, minus the CE of the
    intact model (nats; positive = the head helps). One evaluation per head."""
    layers, _ = find_layers(model)
    n_heads = model.config.num_attention_heads
    means, intact = _head_means(model, layers, data, batch_size)
    head_dim = means[0].numel() // n_heads
    effects = torch.zeros(len(layers), n_heads)
    device = model_device(model)
    for layer, (modules, mean) in enumerate(zip(layers, means)):
        for head in range(n_heads):
            columns = slice(head * head_dim, (head + 1) * head_dim)
            with _replaced(modules.o_proj, columns, mean[columns].to(device)):
                effects[layer, head] = evaluate(model, data, batch_size).ce - intact
    return effects


def effective_heads(scores: torch.Tensor) -> float:
    """(Σs)² / Σs² over every head's score (negative scores count as 0): the number of equal heads that would give
    the same spread, from 1 (one head holds all of it) to the number of heads (all equal). 0 if every score is 0."""
    s = scores.clamp_min(0).double().flatten()
    total = float((s * s).sum())
    return float(s.sum()) ** 2 / total if total > 0 else 0.0


def heads_above(effects: torch.Tensor, nats: float) -> int:
    """How many heads raise the loss by more than ``nats`` when ablated."""
    return int((effects > nats).sum())
