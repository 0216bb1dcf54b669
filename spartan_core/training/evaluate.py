"""One evaluation pass: CE, token and sequence accuracy, and (for a sparsified model) the edge counts of its
deterministic masks."""

from __future__ import annotations

import torch

from .._util import check_finite, eval_mode, model_device
from ..mechanism.sparsify import layer_stats, sparse_state
from ..mechanism.token_edges import EdgeCounter
from .batches import iter_batches
from .config import autocast_for

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: dict, batch_size: int = 64, max_batches: int | None = None,
             bf16: bool = True) -> dict:
    """CE over scored tokens, token and sequence accuracy (argmax of every scored token right: exact match), and,
    for a sparsified model, the edge counts of its deterministic masks, in one pass in eval mode."""
    check_finite(model)
    device = model_device(model)
    counter = EdgeCounter() if sparse_state(model) is not None else None
    total_loss = total_tokens = correct_tokens = 0.0
    correct_seqs = seqs = 0
    with eval_mode(model):
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
    if total_tokens == 0:
        raise ValueError("data: no scored tokens to evaluate (all labels are -100?)")
    return {
        "ce": total_loss / total_tokens,
        "token_accuracy": correct_tokens / total_tokens,
        "sequence_accuracy": correct_seqs / max(seqs, 1),
        "edges": counter.result() if counter is not None else None,
    }
