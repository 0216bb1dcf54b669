"""One evaluation pass: CE, token and sequence accuracy, and (for a sparsified model) the edge counts of its
deterministic masks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._util import check_finite, eval_mode, model_device
from ..mechanism.sparsify import layer_stats, sparse_state
from ..mechanism.token_edges import EdgeCounter, EdgeCounts
from .batches import iter_batches
from .config import autocast_for

__all__ = ["Evaluation", "HeldOut", "evaluate", "measure_heldout"]


@dataclass(frozen=True)
class Evaluation:
    """One pass over a dataset in eval mode. ``sequence_accuracy`` counts a sequence right when every scored token
    is (exact match); ``edges`` are the kept edges of a sparsified model's deterministic masks (None: dense)."""

    ce: float
    token_accuracy: float
    sequence_accuracy: float
    edges: EdgeCounts | None = None


@dataclass(frozen=True)
class HeldOut:
    """One model's held-out numbers, as a post-training run records them (``metrics.dense``, ``metrics.sparse``
    … of its run record): CE, the kept edges of a sparsified model, and the task's exact match by class where
    the task has one (the addition toy: ``all``, ``none``, ``units``, ``tens``, ``both`` and their counts)."""

    ce: float
    edges: EdgeCounts | None = None
    exact_match: dict[str, float] | None = None

    @property
    def kept_fraction(self) -> float | None:
        return None if self.edges is None else self.edges.kept_fraction

    @property
    def kept_per_query(self) -> float | None:
        return None if self.edges is None else self.edges.kept_per_query

    @property
    def exact_match_all(self) -> float | None:
        return None if self.exact_match is None else self.exact_match["all"]

    def to_record(self) -> dict:
        """The run record's JSON (kept fraction and keys per query repeated beside the edges, as readers expect)."""
        record: dict = {"heldout_ce": self.ce}
        if self.edges is not None:
            record.update(edges=self.edges.to_dict(), kept_fraction=self.kept_fraction,
                          kept_per_query=self.kept_per_query)
        if self.exact_match is not None:
            record["exact_match"] = dict(self.exact_match)
        return record

    @classmethod
    def from_record(cls, record: dict) -> "HeldOut":
        unknown = sorted(set(record) - {"heldout_ce", "edges", "kept_fraction", "kept_per_query", "exact_match"})
        if unknown:
            raise ValueError(f"{unknown[0]}: not a held-out metric this version records")
        edges = record.get("edges")
        return cls(ce=record["heldout_ce"], edges=None if edges is None else EdgeCounts.from_dict(edges),
                   exact_match=record.get("exact_match"))


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: dict, batch_size: int = 64, max_batches: int | None = None,
             bf16: bool = True) -> Evaluation:
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
    return Evaluation(ce=total_loss / total_tokens, token_accuracy=correct_tokens / total_tokens,
                      sequence_accuracy=correct_seqs / max(seqs, 1),
                      edges=counter.result() if counter is not None else None)


def measure_heldout(model: torch.nn.Module, heldout: dict, batch_size: int, task_metrics=None) -> HeldOut:
    """What a run reports of ``model`` on its held-out split: CE, kept edges when sparsified, and the task's
    metrics (``task_metrics(model, heldout)`` returns :class:`HeldOut` fields, e.g. the toy's exact match)."""
    result = evaluate(model, heldout, batch_size)
    return HeldOut(ce=result.ce, edges=result.edges, **(task_metrics(model, heldout) if task_metrics else {}))
