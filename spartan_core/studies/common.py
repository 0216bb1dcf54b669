"""What several chapters' studies share: the attention maps of a model and a held-out sample of its data."""

from __future__ import annotations

import torch

from .._util import eager_attention, eval_mode, model_device

__all__ = ["attention_maps", "heldout_blocks"]


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


def heldout_blocks(loaded, max_blocks: int, block_size: int, cache_dir=None, spread: bool = True) -> tuple[str, dict]:
    """(name, token-block data) of at most ``max_blocks`` held-out rows of a loaded model: from its own held-out
    split when it has one (the registry entry names it), else blocks of ``block_size`` tokens of the Shakespeare validation
    plays in the model's own tokenizer. Rows are evenly spread over the split (``spread``) or the first ones."""
    name = loaded.info.get("heldout_split") if loaded.info.get("heldout_split") in loaded.data else None
    if name is not None:
        data = {k: v for k, v in loaded.data[name].items() if k in ("input_ids", "labels", "attention_mask")}
    else:
        from ..data.text import shakespeare_data

        data = shakespeare_data(loaded.tokenizer, block_size=block_size, cache_dir=cache_dir)["validation"]
    total = len(data["input_ids"])
    count = min(max_blocks, total)
    rows = torch.linspace(0, total - 1, count).round().long() if spread else torch.arange(count)
    data = {k: v[rows] for k, v in data.items()}
    if name is None:
        name = f"Shakespeare validation plays, {count} blocks of {block_size}"
    elif count < total:
        name = f"{name} ({count} of {total} rows)"
    return name, data
