"""Edge interventions on a :class:`~.graph.ComponentGraph`: exact patching, EAP and EAP-IG.

Two kinds of ablation say what an ablated edge carries instead of the clean value:

* ``"resample"``: the upstream node's output on the paired corrupted prompt;
* ``"mean"``: its mean output over a reference set (per position; default reference: the corrupted prompts).

Scores are *signed estimates of the change in the mean metric* when one edge alone is ablated:
exact patching measures it (one forward pass per edge, batched), EAP approximates it to first order,
(corrupt_u - clean_u) . d metric / d input_d (one clean forward with gradients, one corrupted forward,
one backward; Syed et al. 2023), and EAP-IG integrates that gradient along the straight line from the
corrupted to the clean embedding output (Hanna et al. 2024), at ``steps`` midpoints.

Caveat for sparsified models: in evaluation mode the gate is a hard threshold with no gradient, so the
gradient methods see each head's kept edges but not gates that would switch; exact patching sees both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
import torch

from .._util import eval_mode, model_device
from .graph import ComponentGraph, RunState
from .tasks import CircuitTask

__all__ = [
    "ABLATIONS",
    "METHODS",
    "EdgeScores",
    "graph_of",
    "corrupt_outputs",
    "evaluate_ablations",
    "exact_edge_scores",
    "attribute",
    "spearman",
]

ABLATIONS = ("resample", "mean")
METHODS = ("exact", "eap", "eap-ig")


def graph_of(model_or_graph) -> ComponentGraph:
    return model_or_graph if isinstance(model_or_graph, ComponentGraph) else ComponentGraph(model_or_graph)


def _mask(task: CircuitTask, device) -> torch.Tensor | None:
    return None if task.attention_mask is None else task.attention_mask.to(device)


def _check(ablation: str, batch_size: int) -> None:
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation: expected one of {ABLATIONS}, got {ablation!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")


@torch.no_grad()
def _clean_outputs(graph: ComponentGraph, input_ids: torch.Tensor, attention_mask=None) -> torch.Tensor:
    """Upstream outputs [N, T, n_upstream, d] of a plain run of ``input_ids`` (one batch)."""
    device = model_device(graph.model)
    with eval_mode(graph.model):
        _, state = graph.run(input_ids.to(device), None if attention_mask is None else attention_mask.to(device))
    return state.upstream()


@torch.no_grad()
def corrupt_outputs(graph, task: CircuitTask, ablation: str = "resample", *, reference: CircuitTask | None = None,
                    batch_size: int = 64) -> torch.Tensor:
    """What ablated edges carry: [N, T, n_upstream, d] (resample) or [1, T, n_upstream, d] (mean).

    ``reference`` (mean ablation only): the task whose ``corrupt_ids`` are averaged (default: ``task``'s);
    the average is per position over non-padding rows.
    """
    graph = graph_of(graph)
    _check(ablation, batch_size)
    if ablation == "resample":
        return torch.cat([_clean_outputs(graph, b.corrupt_ids, b.attention_mask) for b in task.batches(batch_size)])
    reference = task if reference is None else reference
    if reference.clean_ids.shape[1] != task.clean_ids.shape[1]:
        raise ValueError(
            f"reference: prompts of length {reference.clean_ids.shape[1]} cannot give per-position means for a "
            f"task of length {task.clean_ids.shape[1]}"
        )
    total, count = None, None
    for batch in reference.batches(batch_size):
        outputs = _clean_outputs(graph, batch.corrupt_ids, batch.attention_mask).double()
        weight = torch.ones(outputs.shape[:2], dtype=torch.float64, device=outputs.device) \
            if batch.attention_mask is None else batch.attention_mask.to(outputs.device).double()
        part = (outputs * weight[..., None, None]).sum(0)
        total = part if total is None else total + part
        count = weight.sum(0) if count is None else count + weight.sum(0)
    mean = total / count.clamp_min(1)[:, None, None]
    return mean[None].to(next(graph.model.parameters()).dtype)


def _rows(corrupt: torch.Tensor, rows: slice) -> torch.Tensor:
    return corrupt if corrupt.shape[0] == 1 else corrupt[rows]


@torch.no_grad()
def evaluate_ablations(graph, task: CircuitTask, ablated: torch.Tensor, *, ablation: str = "resample",
                       corrupt: torch.Tensor | None = None, batch_size: int = 64,
                       rows_per_pass: int = 2048) -> torch.Tensor:
    """Mean metric [K] of the task under each of K edge ablations ``ablated`` [K, n_edges] (bool or 0..1).

    Several ablations share a forward pass: the prompt batch is repeated once per ablation, up to
    ``rows_per_pass`` rows. ``corrupt`` (from :func:`corrupt_outputs`) is computed when not given.
    """
    graph = graph_of(graph)
    _check(ablation, batch_size)
    if ablated.dim() != 2 or ablated.shape[1] != graph.n_edges:
        raise ValueError(f"ablated: expected [K, {graph.n_edges}], got {tuple(ablated.shape)}")
    device = model_device(graph.model)
    if corrupt is None:
        corrupt = corrupt_outputs(graph, task, ablation, batch_size=batch_size)
    corrupt = corrupt.to(device)
    matrices = graph.ablation_matrix(ablated.to(device))  # [K, n_inputs, n_upstream]
    n_configs = len(ablated)
    totals = torch.zeros(n_configs, dtype=torch.float64, device=device)
    with eval_mode(graph.model):
        for start in range(0, len(task), batch_size):
            rows = slice(start, start + batch_size)
            batch = task.subset(rows)
            b = len(batch)
            ids = batch.clean_ids.to(device)
            mask = _mask(batch, device)
            batch_corrupt = _rows(corrupt, rows)
            per_pass = max(1, rows_per_pass // b)
            for first in range(0, n_configs, per_pass):
                chunk = matrices[first:first + per_pass]
                c = len(chunk)
                state_ablate = chunk[:, None].expand(c, b, *chunk.shape[1:]).reshape(c * b, *chunk.shape[1:])
                state_corrupt = batch_corrupt.expand(b, *batch_corrupt.shape[1:]).repeat(c, 1, 1, 1)
                state = RunState(corrupt=state_corrupt, ablate=state_ablate)
                logits, _ = graph.run(ids.repeat(c, 1), None if mask is None else mask.repeat(c, 1), state)
                targets = {k: v.repeat(c, *[1] * (v.dim() - 1)) for k, v in batch.targets.items()}
                values = batch.metric(logits, targets).double().view(c, b).sum(1)
                totals[first:first + c] += values
    return (totals / len(task)).cpu()


@torch.no_grad()
def _plain_metric(graph: ComponentGraph, task: CircuitTask, batch_size: int, corrupted: bool = False) -> float:
    """Mean metric of the unablated model on the clean (or the corrupted) prompts."""
    device = model_device(graph.model)
    total = 0.0
    with eval_mode(graph.model):
        for batch in task.batches(batch_size):
            ids = (batch.corrupt_ids if corrupted else batch.clean_ids).to(device)
            logits = graph.model(input_ids=ids, attention_mask=_mask(batch, device), use_cache=False).logits
            total += float(batch.metric(logits).double().sum())
    return total / len(task)


@dataclass
class EdgeScores:
    """Signed per-edge scores (estimated change of the mean metric when that edge alone is ablated)."""

    edges: list[tuple[str, str]]
    scores: torch.Tensor  # [n_edges] float64
    method: str
    ablation: str
    heads: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    @classmethod
    def from_graph(cls, graph: ComponentGraph, scores: torch.Tensor, method: str, ablation: str, **metadata):
        return cls(edges=list(graph.edges), scores=scores.detach().double().cpu(), method=method,
                   ablation=ablation, heads=list(graph.heads), metadata=metadata)

    @property
    def edge_names(self) -> list[str]:
        return [f"{u}->{d}" for u, d in self.edges]

    def head_scores(self) -> torch.Tensor:
        """Per head [n_heads]: the sum of its outgoing edge scores, which is the head's own attribution score
        (the gradient at a node's output is the sum of the gradients at the inputs that read it)."""
        index = {h: i for i, h in enumerate(self.heads)}
        out = torch.zeros(len(self.heads), dtype=torch.float64)
        for (source, _), score in zip(self.edges, self.scores):
            if source in index:
                out[index[source]] += score
        return out

    def top_edges(self, n: int) -> torch.Tensor:
        """Bool [n_edges]: the n edges with the largest |score| (ties broken by edge order)."""
        if not 0 <= n <= len(self.edges):
            raise ValueError(f"n: must be in 0..{len(self.edges)}, got {n}")
        keep = torch.zeros(len(self.edges), dtype=torch.bool)
        keep[_order(self.scores)[:n]] = True
        return keep

    def top_heads(self, n: int) -> list[str]:
        if not 0 <= n <= len(self.heads):
            raise ValueError(f"n: must be in 0..{len(self.heads)}, got {n}")
        return [self.heads[int(i)] for i in _order(self.head_scores())[:n]]

    def to_frame(self) -> pd.DataFrame:
        """One row per edge: source, input, kind (q/k/v/mlp/logits), score, |score| and rank (1 = largest)."""
        frame = pd.DataFrame({
            "edge": self.edge_names,
            "source": [u for u, _ in self.edges],
            "input": [d for _, d in self.edges],
            "kind": [_input_kind(d) for _, d in self.edges],
            "score": self.scores.numpy(),
        })
        frame["abs_score"] = frame["score"].abs()
        frame["rank"] = frame["abs_score"].rank(ascending=False, method="first").astype(int)
        frame["method"] = self.method
        frame["ablation"] = self.ablation
        return frame

    def to_dict(self) -> dict:
        return {"method": self.method, "ablation": self.ablation, "edges": self.edge_names,
                "scores": self.scores.tolist(), "metadata": self.metadata}


def _order(scores: torch.Tensor) -> torch.Tensor:
    """Indices by decreasing |score|, stable."""
    return torch.from_numpy(np.argsort(-np.abs(scores.numpy()), kind="stable"))


def _input_kind(name: str) -> str:
    if name == "logits":
        return "logits"
    if name.startswith("m"):
        return "mlp"
    return name.rsplit(".", 1)[1]


def exact_edge_scores(graph, task: CircuitTask, *, ablation: str = "resample", batch_size: int = 64,
                      rows_per_pass: int = 2048, reference: CircuitTask | None = None) -> EdgeScores:
    """Ground truth: ablate each edge alone, measure the change of the mean metric. One pass per edge (batched)."""
    graph = graph_of(graph)
    corrupt = corrupt_outputs(graph, task, ablation, reference=reference, batch_size=batch_size)
    clean = _plain_metric(graph, task, batch_size)
    single = torch.eye(graph.n_edges, dtype=torch.bool)
    values = evaluate_ablations(graph, task, single, ablation=ablation, corrupt=corrupt, batch_size=batch_size,
                                rows_per_pass=rows_per_pass)
    return EdgeScores.from_graph(graph, values - clean, "exact", ablation, clean_metric=clean)


def _gradient_run(graph: ComponentGraph, batch: CircuitTask, device, embedding=None):
    """Clean forward with probes; returns (summed metric, gradients [B, T, n_inputs, d], upstream outputs)."""
    state = RunState(probe=True, embedding=embedding)
    with torch.enable_grad():
        logits, state = graph.run(batch.clean_ids.to(device), _mask(batch, device), state)
        metric = batch.metric(logits).sum()
        grads = torch.autograd.grad(metric, state.probes)
    return metric.detach(), torch.cat(grads, dim=2), state.upstream().detach()


def _first_order_scores(graph: ComponentGraph, task: CircuitTask, gradients, method: str, *, ablation: str,
                        batch_size: int, reference: CircuitTask | None, **metadata) -> EdgeScores:
    """Edge scores (corrupt_u - clean_u) . g_d, averaged over the task, where ``gradients(batch, corrupt, device)``
    gives the gradient g of the metric at every input d and the clean upstream outputs: the part EAP and EAP-IG
    share, which differs only in that gradient."""
    device = model_device(graph.model)
    corrupt_all = corrupt_outputs(graph, task, ablation, reference=reference, batch_size=batch_size)
    total = torch.zeros(graph.n_inputs, graph.n_upstream, dtype=torch.float64, device=device)
    with eval_mode(graph.model):
        for start in range(0, len(task), batch_size):
            rows = slice(start, start + batch_size)
            batch = task.subset(rows)
            corrupt = _rows(corrupt_all, rows).to(device)
            grads, clean = gradients(batch, corrupt, device)
            difference = (corrupt - clean).float().flatten(0, 1)  # [B*T, n_upstream, d]
            per_input = grads.float().flatten(0, 1)  # [B*T, n_inputs, d]
            total += (per_input.permute(1, 0, 2).flatten(1) @ difference.permute(1, 0, 2).flatten(1).t()).double()
    total = (total / len(task)).cpu()
    scores = total[graph.edge_input, graph.edge_source]
    return EdgeScores.from_graph(graph, scores, method, ablation, **metadata)


def _eap_scores(graph: ComponentGraph, task: CircuitTask, *, ablation: str, batch_size: int,
                reference: CircuitTask | None) -> EdgeScores:
    """EAP: the gradient at the clean run (one forward and one backward per batch)."""
    def gradients(batch, corrupt, device):
        _, grads, clean = _gradient_run(graph, batch, device)
        return grads, clean

    return _first_order_scores(graph, task, gradients, "eap", ablation=ablation, batch_size=batch_size,
                               reference=reference, steps=None)


def _eap_ig_scores(graph: ComponentGraph, task: CircuitTask, *, ablation: str, batch_size: int,
                   reference: CircuitTask | None, steps: int) -> EdgeScores:
    """EAP-IG: the gradient averaged over ``steps`` midpoints of the straight line from the corrupted to the clean
    embedding output."""
    def gradients(batch, corrupt, device):
        clean = _clean_outputs(graph, batch.clean_ids, batch.attention_mask)
        start_emb = corrupt[:, :, 0].expand_as(clean[:, :, 0])
        end_emb = clean[:, :, 0]
        grads = None
        for k in range(steps):
            alpha = (k + 0.5) / steps
            _, g, _ = _gradient_run(graph, batch, device, embedding=start_emb + alpha * (end_emb - start_emb))
            grads = g if grads is None else grads + g
        return grads / steps, clean

    return _first_order_scores(graph, task, gradients, "eap-ig", ablation=ablation, batch_size=batch_size,
                               reference=reference, steps=steps)


def attribute(graph, task: CircuitTask, method: str = "eap-ig", *, ablation: str = "resample", steps: int = 8,
              batch_size: int = 32, reference: CircuitTask | None = None, rows_per_pass: int = 2048) -> EdgeScores:
    """Edge scores by ``method``: ``"eap"``, ``"eap-ig"`` (``steps`` interpolation points) or ``"exact"``
    (``rows_per_pass`` ablated rows per forward pass)."""
    graph = graph_of(graph)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    _check(ablation, batch_size)
    if method != "exact" and steps < 1:  # checked for both gradient methods, as it always was
        raise ValueError(f"steps: must be >= 1, got {steps}")
    scores = {"exact": partial(exact_edge_scores, rows_per_pass=rows_per_pass), "eap": _eap_scores,
              "eap-ig": partial(_eap_ig_scores, steps=steps)}[method]
    return scores(graph, task, ablation=ablation, batch_size=batch_size, reference=reference)


def rank_agreement(graph, task: CircuitTask, methods: Sequence[str]) -> dict[str, float]:
    """Spearman correlation of each gradient method's edge ranking (|score|) with exact patching's on ``task``:
    how far an approximation can be trusted on this model."""
    exact = attribute(graph, task, "exact").scores.abs()
    return {method: spearman(attribute(graph, task, method).scores.abs(), exact) for method in methods}


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties) of two equal-length vectors."""
    a = pd.Series(np.asarray(a, dtype=float)).rank()
    b = pd.Series(np.asarray(b, dtype=float)).rank()
    if len(a) != len(b):
        raise ValueError(f"b: length {len(b)} differs from a's {len(a)}")
    return float(np.corrcoef(a, b)[0, 1])
