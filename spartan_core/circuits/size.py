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

from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .graph import ComponentGraph
from .patching import ABLATIONS, EdgeScores, _order, attribute, corrupt_outputs, evaluate_ablations, graph_of
from .tasks import CircuitTask

__all__ = [
    "THRESHOLDS",
    "explained_effect",
    "log_grid",
    "linear_grid",
    "edge_curve",
    "head_curve",
    "circuit_size",
    "repeat",
    "compare_sizes",
    "size_study",
    "size_ratios",
]

THRESHOLDS = (0.8, 0.9, 0.95)


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


def _setup(graph, task, ablation, batch_size, corrupt):
    graph = graph_of(graph)
    if corrupt is None:
        corrupt = corrupt_outputs(graph, task, ablation, batch_size=batch_size)
    return graph, corrupt


def edge_curve(graph, task: CircuitTask, scores, *, grid: Sequence[int] | None = None, points: int = 16,
               ablation: str = "resample", batch_size: int = 64, corrupt=None) -> pd.DataFrame:
    """Explained effect against edges kept (default grid: :func:`log_grid`); columns kept, metric, explained."""
    graph, corrupt = _setup(graph, task, ablation, batch_size, corrupt)
    curve = _Curve(graph, task, "edges", _ordering(scores, "edges", graph), ablation, corrupt, batch_size)
    grid = log_grid(graph.n_edges, points) if grid is None else list(grid)
    m_empty, m_model = curve.at([0, graph.n_edges])
    return _curve_frame(curve, grid, m_model, m_empty)


def head_curve(graph, task: CircuitTask, scores, *, ablation: str = "resample", batch_size: int = 64,
               corrupt=None) -> pd.DataFrame:
    """Explained effect against heads kept, 0..n_heads (``scores``: EdgeScores or per-head scores)."""
    graph, corrupt = _setup(graph, task, ablation, batch_size, corrupt)
    curve = _Curve(graph, task, "heads", _ordering(scores, "heads", graph), ablation, corrupt, batch_size)
    grid = list(range(len(graph.heads) + 1))
    m_empty, m_model = curve.at([0, len(graph.heads)])
    return _curve_frame(curve, grid, m_model, m_empty)


def linear_grid(n_max: int, points: int | None = None) -> list[int]:
    """0..n_max, every integer (``points`` None) or about ``points`` evenly spaced integers, both ends included."""
    if points is None or points > n_max:
        return list(range(n_max + 1))
    if points < 2:
        raise ValueError(f"points: must be >= 2, got {points}")
    return [int(n) for n in np.unique(np.round(np.linspace(0, n_max, points)).astype(int))]


def circuit_size(graph, task: CircuitTask, scores, *, thresholds: Sequence[float] = THRESHOLDS,
                 ablation: str = "resample", points: int = 16, head_points: int | None = None,
                 refine: bool = True, batch_size: int = 64) -> dict:
    """Curves (edges on a log grid of ~``points``, heads on a linear grid: every count, or ~``head_points`` for
    big models) and the edges/heads needed for each threshold (refined by bisection between grid points).

    Returns ``{"edges": {threshold: n | None}, "heads": {...}, "edge_curve": DataFrame, "head_curve":
    DataFrame, "m_model": float, "m_empty_edges": float, "m_empty_heads": float, "n_edges": int,
    "n_heads": int}`` (None: the threshold is never reached).
    """
    for t in thresholds:
        if not 0 < t <= 1:
            raise ValueError(f"thresholds: each must be in (0, 1], got {t}")
    graph, corrupt = _setup(graph, task, ablation, batch_size, None)
    result = {"n_edges": graph.n_edges, "n_heads": len(graph.heads), "ablation": ablation}
    for kind in ("edges", "heads"):
        curve = _Curve(graph, task, kind, _ordering(scores, kind, graph), ablation, corrupt, batch_size)
        grid = log_grid(curve.n_max, points) if kind == "edges" else linear_grid(curve.n_max, head_points)
        m_empty, m_model = curve.at([0, curve.n_max])
        result[f"{kind[:-1]}_curve"] = _curve_frame(curve, grid, m_model, m_empty)
        result[kind] = {float(t): _needed(curve, grid, m_model, m_empty, t, refine) for t in thresholds}
        result["m_model"] = m_model
        result[f"m_empty_{kind}"] = m_empty
    return result


def repeat(fn: Callable[[int], dict], seeds: Iterable[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run ``fn(seed) -> dict of numbers`` per seed; returns (one row per seed, mean/std/min/max per column)."""
    rows = []
    for seed in seeds:
        row = dict(fn(int(seed)))
        row["seed"] = int(seed)
        rows.append(row)
    if not rows:
        raise ValueError("seeds: at least one seed is needed")
    frame = pd.DataFrame(rows)
    numeric = frame.drop(columns="seed").select_dtypes("number")
    summary = numeric.agg(["mean", "std", "min", "max"]).T
    summary["n"] = numeric.notna().sum()
    return frame, summary


def compare_sizes(models: dict, task: CircuitTask, *, method: str = "eap-ig", ablation: str = "resample",
                  threshold: float = 0.9, steps: int = 8, points: int = 16, head_points: int | None = None,
                  batch_size: int = 32) -> dict:
    """Edges and heads needed for ``threshold`` of the effect, per model, and the ratio to the first model.

    ``models``: e.g. ``{"dense": dense_model, "sparse": sparse_model}``. Returns ``{"threshold", "method",
    "ablation", "models": {name: {"edges", "heads", "n_edges", "n_heads", "m_model", "m_empty_edges"}},
    "edge_ratio": {name: first / name}, "head_ratio": {...}, "curves": DataFrame}`` (curves: every model's
    edge and head curve, with a ``model`` column, for plotting).
    """
    needed, curves = size_study(models, lambda _seed: task, [0], method=method, ablations=(ablation,),
                                thresholds=(threshold,), steps=steps, points=points, head_points=head_points,
                                batch_size=batch_size)
    per_model = {}
    for name in models:
        rows = needed[needed["model"] == name].set_index("kind")

        def count(kind):
            value = rows.loc[kind, "needed"]
            return None if np.isnan(value) else int(value)

        per_model[name] = {
            "edges": count("edges"), "heads": count("heads"),
            "n_edges": int(rows.loc["edges", "total"]), "n_heads": int(rows.loc["heads", "total"]),
            "m_model": float(rows.loc["edges", "m_model"]), "m_empty_edges": float(rows.loc["edges", "m_empty"]),
            "m_empty_heads": float(rows.loc["heads", "m_empty"]),
        }
    first = next(iter(per_model))

    def ratio(key):
        base = per_model[first][key]
        return {n: (base / v if base is not None and v else None) for n, v in
                ((n, per_model[n][key]) for n in per_model)}

    return {"threshold": float(threshold), "method": method, "ablation": ablation, "models": per_model,
            "edge_ratio": ratio("edges"), "head_ratio": ratio("heads"),
            "curves": curves}


def size_study(models: dict, make_task: Callable[[int], CircuitTask], seeds: Iterable[int], *,
               method: str = "eap-ig", ablations: Sequence[str] = ("resample",),
               thresholds: Sequence[float] = THRESHOLDS, steps: int = 8, points: int = 16,
               head_points: int | None = None, batch_size: int = 32,
               progress: Callable[[Iterable], Iterable] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Circuit sizes for every model x ablation x prompt set (``make_task(seed)``), scored by ``method``.

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
        scores = attribute(graph, task, method, ablation=ablation, steps=steps, batch_size=batch_size)
        size = circuit_size(graph, task, scores, thresholds=thresholds, ablation=ablation, points=points,
                            head_points=head_points, batch_size=batch_size)
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
    """``reference``'s count over each other model's, per ablation, kind and seed, at ``threshold``; then the mean,
    min and max over seeds (a ratio of 5 means the other model's circuit is 5x smaller)."""
    at = needed[np.isclose(needed["threshold"], threshold)]
    wide = at.pivot_table(index=["ablation", "kind", "seed"], columns="model", values="needed")
    if reference not in wide:
        raise ValueError(f"reference: {reference!r} is not a model of the study ({list(wide.columns)})")
    others = [m for m in wide.columns if m != reference]
    ratios = pd.concat({m: wide[reference] / wide[m] for m in others}, axis=1)
    summary = ratios.groupby(level=["ablation", "kind"]).agg(["mean", "min", "max"])
    summary.columns = [f"{model} {stat}" for model, stat in summary.columns]
    return summary
