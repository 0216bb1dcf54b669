"""Repeated random tokens, the standard probe for induction heads (Olsson et al. 2022).

Each sequence is ``[bos] x_1 .. x_L x_1 .. x_L``: L distinct random tokens, then the same L again. A model with
induction heads predicts the second half from the first; an induction head attends, from each token of the
second half, to the token that followed the previous occurrence of the current token (position of that
occurrence + 1). :func:`induction_scores` measures that attention per head. :func:`distinct_random_tokens` is the
one generator of such tokens, shared with the induction circuit task (:func:`spartan_core.circuits.induction_task`).
"""

from __future__ import annotations

import torch

from .._util import eager_attention, eval_mode, model_device

__all__ = ["distinct_random_tokens", "random_token_range", "induction_data", "induction_targets",
           "induction_scores"]


def distinct_random_tokens(n_rows: int, count: int, vocab_size: int, *, seed: int = 0, low: int = 0) -> torch.Tensor:
    """Long [n_rows, count]: per row, ``count`` distinct tokens drawn uniformly from ``[low, vocab_size)``, the
    same for the same seed."""
    if n_rows < 1:
        raise ValueError(f"n_rows: must be at least 1, got {n_rows}")
    if not 0 <= low < vocab_size or vocab_size - low < count:
        raise ValueError(f"vocab_size: [low={low}, {vocab_size}) must hold at least {count} tokens")
    generator = torch.Generator().manual_seed(seed)
    span = vocab_size - low
    if span <= 4096:
        return torch.rand(n_rows, span, generator=generator).argsort(dim=1)[:, :count] + low
    # large vocabularies: one permutation per row rather than an [N, V] random matrix
    return torch.stack([torch.randperm(span, generator=generator)[:count] for _ in range(n_rows)]) + low


def random_token_range(tokenizer, vocab_size: int) -> tuple[int, int | None]:
    """(lowest id, start token) for random-token sequences: ids above the tokenizer's special tokens (when those
    sit at the bottom of the vocabulary), starting with its BOS (or end-of-text) token when it has one."""
    special = [int(i) for i in getattr(tokenizer, "all_special_ids", []) or [] if i is not None]
    low = max(special) + 1 if special and max(special) < vocab_size // 2 else 0
    bos = getattr(tokenizer, "bos_token_id", None)
    return low, getattr(tokenizer, "eos_token_id", None) if bos is None else bos


def induction_data(n_sequences: int, half_length: int, vocab_size: int, *, seed: int = 0, low: int = 0,
                   bos_token_id: int | None = None) -> dict[str, torch.Tensor]:
    """Token-block dict of ``n_sequences`` rows ``[bos] x x`` with ``x`` = ``half_length`` distinct tokens drawn
    uniformly from ``[low, vocab_size)``. ``labels`` score the repeated half except its first token (which no
    context predicts), -100 elsewhere, so their CE is the in-context copying loss."""
    if n_sequences < 1:
        raise ValueError(f"n_sequences: must be at least 1, got {n_sequences}")
    if half_length < 2:
        raise ValueError(f"half_length: must be at least 2, got {half_length}")
    first = distinct_random_tokens(n_sequences, half_length, vocab_size, seed=seed, low=low)
    parts = [first, first]
    if bos_token_id is not None:
        parts.insert(0, torch.full((n_sequences, 1), bos_token_id, dtype=torch.long))
    input_ids = torch.cat(parts, dim=1).long()
    labels = input_ids.clone()
    labels[:, : input_ids.shape[1] - half_length + 1] = -100
    return {"input_ids": input_ids, "labels": labels}


def induction_targets(input_ids: torch.Tensor) -> torch.Tensor:
    """Long [N, T]: for each query position, (most recent earlier position of the same token) + 1, or -1 if the
    token has not occurred before. Works for any sequences, not only the repeated-token layout."""
    n, t = input_ids.shape
    same = input_ids[:, :, None] == input_ids[:, None, :]  # [N, Tq, Tk]
    earlier = torch.ones(t, t, dtype=torch.bool, device=input_ids.device).tril(-1)
    match = same & earlier
    positions = torch.arange(t, device=input_ids.device)
    last = torch.where(match, positions, torch.full_like(positions, -1)).max(dim=-1).values
    return torch.where(last >= 0, last + 1, last)


@torch.no_grad()
def induction_scores(model, data: dict[str, torch.Tensor], batch_size: int = 32) -> torch.Tensor:
    """Float [layers, heads]: mean attention weight from each query whose token occurred before to the token
    right after that previous occurrence. Uses ``output_attentions=True``; for a sparsified model these are the
    masked (kept-edge) weights."""
    device = model_device(model)
    mask = data.get("attention_mask")
    total, count = None, 0
    with eval_mode(model), eager_attention(model):
        for start in range(0, len(data["input_ids"]), batch_size):
            ids = data["input_ids"][start:start + batch_size].to(device)
            kwargs = {"attention_mask": mask[start:start + batch_size].to(device)} if mask is not None else {}
            out = model(input_ids=ids, output_attentions=True, **kwargs)
            attn = torch.stack([a.float() for a in out.attentions], dim=1)  # [B, L, H, T, T]
            target = induction_targets(ids)
            if mask is not None:
                target = torch.where(kwargs["attention_mask"].bool(), target, -1)
            valid = target >= 0
            index = target.clamp_min(0)[:, None, None, :, None].expand(*attn.shape[:4], 1)
            picked = attn.gather(-1, index).squeeze(-1)  # [B, L, H, T]
            batch_sum = (picked * valid[:, None, None, :]).sum(dim=(0, 3))
            total = batch_sum if total is None else total + batch_sum
            count += int(valid.sum())
    if count == 0:
        raise ValueError("data: no token repeats an earlier one, so there is nothing to score")
    return (total / count).cpu()
