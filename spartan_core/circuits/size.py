"""How big is a circuit: explained-effect curves and the heads/edges needed to reach a fraction of the effect.

Given edge scores, a circuit of n edges keeps the n edges with the largest |score| and ablates every other edge;
a circuit of n heads keeps the n heads with the largest |head score| and ablates every other head as a node
(embedding and MLPs always kept, so the head curve isolates attention). The explained effect is

    (m(circuit) - m(empty)) / (m(model) - m(empty)),

with m(empty) = every edge ablated (for heads: every head ablated). The number needed for a fraction f is the
smallest n on the grid whose explained effect reaches f, refined by bisection between that grid point and the one
before (curves need not be monotone, so this is the first crossing the search finds). All results are plain
dicts and pandas DataFrames, ready for CSV/JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .graph import ComponentGraph
from .patching import ABLATIONS, EdgeScores, _order, attribute, corrupt_outputs, evaluate_ablations, graph_of
from .tasks import CircuitTask

__all__ = [
    "THRESHOLDS",
    "SizeSettings",
    "explained_effect",
    "log_grid",
    "linear_grid",
    "circuit_size",
    "circuit_heads",
    "size_study",
    "size_ratios",
]

THRESHOLDS = (0.8, 0.9, 0.95)


@dataclass(frozen=True)
class SizeSettings:
    """How a circuit's size is measured, whichever ablation: the thresholds of explained effect, the grids of the
    curves, whether to bisect between grid points, and the prompts per forward pass. The defaults are
    :func:`size_study`'s (a lone :func:`circuit_size` measures in batches of 64)."""

    thresholds: Sequence[float] = THRESHOLDS
    points: int = 16  # the edge curve: about this many counts on a log grid
    head_points: int | None = None  # the head curve: every count (None), or about this many on a linear grid
    refine: bool = True  # bisect between the grid points around each threshold
    batch_size: int = 32


def explained_effect(m_circuit, m_model: float, m_empty: float):
    """(m(circuit) - m(empty)) / (m(model) - m(empty)); NaN when the model has no effect to explain."""
    gap = m_model - m_empty
    if gap == 0:
        return np.full(np.shape(m_circuit), np.nan) if np.ndim(m_circuit) else float("nan")
    return (np.asarray(m_circuit, dtype=float) - m_empty) / gap


def log_grid(n_max: int, points: int = 16) -> list[int]:
    """0 plus about ``points`` integers spaced evenly in log from 1 to ``n_max`` (both ends included)."""
    if n_max < 1:
        raise ValueError(f"n_max: must be >= 1, got {n_max}")
    if points < 2:
        raise ValueError(f"points: must be >= 2, got {points}")
    grid = np.unique(np.round(np.logspace(0, np.log10(n_max), points)).astype(int))
    return [0] + [int(n) for n in grid]


def _head_ablations(graph: ComponentGraph, order: Sequence[int], counts: Sequence[int]) -> torch.Tensor:
    """[K, n_edges]: for each count n, every outgoing edge of the heads outside the first n of ``order``."""
    out_edges = torch.stack([graph.node_edges(h) for h in graph.heads])  # [n_heads, n_edges]
    rows = []
    for n in counts:
        dropped = torch.ones(len(graph.heads), dtype=torch.bool)
        dropped[list(order[:n])] = False
        rows.append(out_edges[dropped].any(0))
    return torch.stack(rows)


def _edge_ablations(order: Sequence[int], n_edges: int, counts: Sequence[int]) -> torch.Tensor:
    rows = torch.ones(len(counts), n_edges, dtype=torch.bool)
    for row, n in zip(rows, counts):
        row[list(order[:n])] = False
    return rows


class _Curve:
    """Evaluates the metric at circuit sizes for one ordering, caching results."""

    def __init__(self, graph, task, kind, order, ablation, corrupt, batch_size):
        self.graph, self.task, self.kind, self.order = graph, task, kind, [int(i) for i in order]
        self.ablation, self.corrupt, self.batch_size = ablation, corrupt, batch_size
        self.values: dict[int, float] = {}
        self.n_max = len(graph.heads) if kind == "heads" else graph.n_edges

    def at(self, counts: Iterable[int]) -> list[float]:
        counts = [int(n) for n in counts]
        missing = sorted({n for n in counts if n not in self.values})
        if missing:
            if self.kind == "heads":
                ablated = _head_ablations(self.graph, self.order, missing)
            else:
                ablated = _edge_ablations(self.order, self.graph.n_edges, missing)
            values = evaluate_ablations(self.graph, self.task, ablated, ablation=self.ablation,
                                        corrupt=self.corrupt, batch_size=self.batch_size)
            self.values.update(zip(missing, values.tolist()))
        return [self.values[n] for n in counts]


def _ordering(scores, kind: str, graph: ComponentGraph) -> list[int]:
    if kind == "heads":
        head_scores = scores.head_scores() if isinstance(scores, EdgeScores) else torch.as_tensor(scores).double()
        if len(head_scores) != len(graph.heads):
            raise ValueError(f"scores: expected {len(graph.heads)} head scores, got {len(head_scores)}")
        return _order(head_scores).tolist()
    edge_scores = scores.scores if isinstance(scores, EdgeScores) else torch.as_tensor(scores).double()
    if len(edge_scores) != graph.n_edges:
        raise ValueError(f"scores: expected {graph.n_edges} edge scores, got {len(edge_scores)}")
    return _order(edge_scores).tolist()


def _curve_frame(curve: _Curve, counts: Sequence[int], m_model: float, m_empty: float) -> pd.DataFrame:
    metric = curve.at(counts)
    return pd.DataFrame({
        "kept": list(counts),
        "metric": metric,
        "explained": explained_effect(metric, m_model, m_empty),
        "kind": curve.kind,
        "ablation": curve.ablation,
    })


def _needed(curve: _Curve, grid: Sequence[int], m_model: float, m_empty: float, threshold: float,
            refine: bool) -> int | None:
    explained = explained_effect(curve.at(grid), m_model, m_empty)
    hits = [i for i, e in enumerate(explained) if e >= threshold]
    if not hits:
        return None
    i = hits[0]
    if i == 0 or not refine:
        return int(grid[i])
    low, high = int(grid[i - 1]), int(grid[i])  # explained(low) < threshold <= explained(high)
    while high - low > 1:
        mid = (low + high) // 2
        if explained_effect(curve.at([mid])[0], m_model, m_empty) >= threshold:
            high = mid
        else:
            low = mid
    return high


def linear_grid(n_max: int, points: int | None = None) -> list[int]:
    """0..n_max, every integer (``points`` None) or about ``points`` evenly spaced integers, both ends included."""
    if points is None or points > n_max:
        return list(range(n_max + 1))
    if points < 2:
        raise ValueError(f"points: must be >= 2, got {points}")
    return [int(n) for n in np.unique(np.round(np.linspace(0, n_max, points)).astype(int))]


def circuit_size(graph, task: CircuitTask, scores, *, ablation: str = "resample",
                 settings: SizeSettings = SizeSettings(batch_size=64)) -> dict:
    """Curves (edges on a log grid of ~``settings.points``, heads on a linear grid: every count, or
    ~``settings.head_points`` for big models) and the edges/heads needed for each threshold (refined by bisection
    between grid points unless ``settings.refine`` is False).

    Returns ``{"edges": {threshold: n | None}, "heads": {...}, "edge_curve": DataFrame, "head_curve":
    DataFrame, "m_model": float, "m_empty_edges": float, "m_empty_heads": float, "n_edges": int,
    "n_heads": int}`` (None: the threshold is never reached).
    """
    for t in settings.thresholds:
        if not 0 < t <= 1:
            raise ValueError(f"thresholds: each must be in (0, 1], got {t}")
    graph = graph_of(graph)
    corrupt = corrupt_outputs(graph, task, ablation, batch_size=settings.batch_size)
    result = {"n_edges": graph.n_edges, "n_heads": len(graph.heads), "ablation": ablation}
    for kind in ("edges", "heads"):
        curve = _Curve(graph, task, kind, _ordering(scores, kind, graph), ablation, corrupt, settings.batch_size)
        edges = kind == "edges"
        grid = log_grid(curve.n_max, settings.points) if edges else linear_grid(curve.n_max, settings.head_points)
        m_empty, m_model = curve.at([0, curve.n_max])
        result[f"{kind[:-1]}_curve"] = _curve_frame(curve, grid, m_model, m_empty)
        result[kind] = {float(t): _needed(curve, grid, m_model, m_empty, t, settings.refine)
                        for t in settings.thresholds}
        result["m_model"] = m_model
        result[f"m_empty_{kind}"] = m_empty
    return result


def circuit_heads(graph, task: CircuitTask, scores, threshold: float = 0.9, *, ablation: str = "resample",
                  batch_size: int = 64) -> list[str]:
    """The heads of the circuit at ``threshold`` explained effect: the fewest top-scored heads (the ordering
    :func:`circuit_size` counts in) whose circuit explains at least that much; empty when none does."""
    size = circuit_size(graph, task, scores, ablation=ablation,
                        settings=SizeSettings(thresholds=(threshold,), points=2, batch_size=batch_size))
    needed = size["heads"][float(threshold)]
    graph = graph_of(graph)
    return [graph.heads[i] for i in _ordering(scores, "heads", graph)[:needed or 0]]


def size_study(models: dict, make_task: Callable[[int], CircuitTask], seeds: Iterable[int], *,
               method: str = "eap-ig", ablations: Sequence[str] = ("resample",), steps: int = 8,
               settings: SizeSettings = SizeSettings(),
               progress: Callable[[Iterable], Iterable] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Circuit sizes for every model x ablation x prompt set (``make_task(seed)``), scored by ``method`` (with
    ``steps`` for EAP-IG) and measured by ``settings``, whose batch size the attribution takes too.

    Each model is attributed and measured on the same prompt sets, so dense and sparse differ only in weights.
    Returns ``(needed, curves)``: ``needed`` has one row per model, ablation, seed, kind (``edges``/``heads``) and
    threshold, with the count needed (NaN: never reached), the graph's total and the metric of the whole model and of
    the empty circuit (their gap is the effect being explained); ``curves`` every explained-effect curve with the
    same keys. ``progress`` wraps the loop (e.g. ``tqdm``).
    """
    if not models:
        raise ValueError("models: give at least one model")
    if not ablations or any(a not in ABLATIONS for a in ablations):
        raise ValueError(f"ablations: choose from {ABLATIONS}, got {list(ablations)}")
    jobs = [(seed, ablation, name) for seed in seeds for ablation in ablations for name in models]
    graphs = {name: ComponentGraph(model) for name, model in models.items()}
    tasks, needed, curves = {}, [], []
    for seed, ablation, name in (progress(jobs) if progress else jobs):
        task = tasks.setdefault(seed, make_task(int(seed)))
        graph = graphs[name]
        scores = attribute(graph, task, method, ablation=ablation, steps=steps, batch_size=settings.batch_size)
        size = circuit_size(graph, task, scores, ablation=ablation, settings=settings)
        keys = {"model": name, "ablation": ablation, "seed": int(seed)}
        for kind in ("edges", "heads"):
            total = size[f"n_{kind}"]
            for threshold, count in size[kind].items():
                needed.append({**keys, "kind": kind, "threshold": threshold,
                               "needed": np.nan if count is None else count, "total": total,
                               "m_model": size["m_model"], "m_empty": size[f"m_empty_{kind}"]})
            curves.append(size[f"{kind[:-1]}_curve"].assign(**keys, total=total))
    return pd.DataFrame(needed), pd.concat(curves, ignore_index=True)


def size_ratios(needed: pd.DataFrame, reference: str, threshold: float = 0.9) -> pd.DataFrame:
    """``reference``'s count over each other model's at ``threshold``, per ablation, kind and prompt set; then their
    ``ratio_mean``, ``ratio_min``, ``ratio_max`` and ``prompt_sets``, one row per (ablation, kind, model). A ratio of
    5 means the other model's circuit is 5x smaller; a count never reached (NaN) gives no ratio for that prompt set."""
    at = needed[np.isclose(needed["threshold"], threshold)]
    wide = at.pivot(index=["ablation", "kind", "seed"], columns="model", values="needed")
    if reference not in wide:
        raise ValueError(f"reference: {reference!r} is not a model of the study ({list(wide.columns)})")
    others = [m for m in wide.columns if m != reference]
    ratios = pd.concat({m: wide[reference] / wide[m] for m in others}, names=["model"]).rename("ratio")
    summary = ratios.groupby(level=["ablation", "kind", "model"]).agg(["mean", "min", "max", "count"])
    summary.columns = ["ratio_mean", "ratio_min", "ratio_max", "prompt_sets"]
    return summary
