"""The gate and attention maps: chapter 1's mechanism figures, attention maps drawn the same way in every chapter,
and per-head or per-layer tables (induction scores, kept edges, carry selectivity) as heatmaps."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from ..formatting import DECIMAL2, SETTING
from .style import ATTENTION_CMAP, DENSE, SPARSE, TARGET, to_numpy


def _attention_heatmap(ax, weights, tokens: Sequence[str] | None = None, *, title: str | None = None,
                       vmax: float | None = 1.0, cmap: str = ATTENTION_CMAP, annotate: bool = False,
                       colorbar: bool = False):
    """One [query, key] attention map: queries down, keys across, causal upper triangle left blank."""
    w = to_numpy(weights)
    if w.ndim != 2:
        raise ValueError(f"weights: expected a [query, key] matrix, got shape {w.shape}")
    future = np.triu(np.ones_like(w, dtype=bool), k=1 + w.shape[1] - w.shape[0])
    labels = list(tokens) if tokens is not None else None
    sns.heatmap(w, mask=future, cmap=cmap, vmin=0.0, vmax=vmax, square=True, ax=ax, cbar=colorbar,
                cbar_kws={"fraction": 0.046, "pad": 0.04}, annot=annotate, fmt=".2f", annot_kws={"fontsize": 6},
                xticklabels=labels[-w.shape[1]:] if labels else False,
                yticklabels=labels[-w.shape[0]:] if labels else False, linewidths=0)
    ax.tick_params(labelsize=8, length=0)
    ax.grid(False)
    ax.set_facecolor("white")
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if title:
        ax.set_title(title)
    return ax.collections[0]


def attention_panels(panels: Sequence[tuple[object, str]]):
    """[query, key] maps, each ``(matrix, title)``, read left to right and down, three to a row: the steps of the
    mechanism in the order they happen."""
    if not panels:
        raise ValueError("panels: need at least one (matrix, title) pair")
    fig, axes = _panel_grid(len(panels), columns=3, panel=(2.9, 2.9))
    for ax, (matrix, title) in zip(axes, panels):
        _attention_heatmap(ax, to_numpy(matrix), title=title)
    return fig


def _panel_grid(n: int, *, columns: int, panel: tuple[float, float]):
    """``n`` axes in rows of at most ``columns`` (each ``panel`` inches), unused slots hidden, so a figure with
    many panels stays readable in the book's text column."""
    columns = min(columns, n)
    rows = -(-n // columns)
    fig, grid = plt.subplots(rows, columns, figsize=(panel[0] * columns, panel[1] * rows), squeeze=False,
                             constrained_layout=True)
    for ax in grid.flat[n:]:
        ax.set_visible(False)
    return fig, list(grid.flat[:n])


def weight_sums(kept, dense):
    """Per-query sums of kept and of dense attention weights as overlaid bars (dense rows always sum to 1)."""
    kept, dense = to_numpy(kept), to_numpy(dense)
    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    queries = np.arange(len(kept))
    ax.bar(queries, dense, color=DENSE, alpha=0.35, label="dense (always 1)")
    ax.bar(queries, kept, color=SPARSE, label="gated, deterministic mask")
    ax.set_xlabel("query position")
    ax.set_ylabel("sum of attention weights")
    ax.set_ylim(0, 1.25)
    ax.legend(loc="upper center", ncol=2)
    return fig


def keep_frequency(probability, frequency, draws: int):
    """Each edge's keep frequency over ``draws`` sampled masks against its gate probability, on the diagonal."""
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], color=TARGET, linestyle="--", linewidth=1, label="frequency = σ(s + b)")
    ax.scatter(to_numpy(probability), to_numpy(frequency), s=14, color=SPARSE, label="causal edges")
    ax.set_xlabel("gate probability σ(s + b)")
    ax.set_ylabel(f"kept in {draws} sampled masks")
    ax.legend(loc="upper left")
    return fig


def head_grid(weights, tokens: Sequence[str] | None = None, *, title: str | None = None,
              vmax: float | None = 1.0, cell_size: float = 1.6, label_tokens: bool = False,
              row_labels: Sequence[str] | None = None):
    """A rows x heads grid of attention maps from ``weights`` [row, head, query, key] (rows are layers unless
    ``row_labels`` names them, e.g. dense vs sparse); returns the figure."""
    w = to_numpy(weights)
    if w.ndim != 4:
        raise ValueError(f"weights: expected [layer, head, query, key], got shape {w.shape}")
    layers, heads = w.shape[:2]
    if row_labels is not None and len(row_labels) != layers:
        raise ValueError(f"row_labels: need {layers} labels, got {len(row_labels)}")
    fig, axes = plt.subplots(layers, heads, figsize=(cell_size * heads + 0.6, cell_size * layers + 0.6),
                             squeeze=False, constrained_layout=True)
    for layer in range(layers):
        for head in range(heads):
            ax = axes[layer, head]
            _attention_heatmap(ax, w[layer, head], tokens if label_tokens else None, vmax=vmax)
            ax.set_xlabel("")
            label = row_labels[layer] if row_labels is not None else f"layer {layer}"
            ax.set_ylabel(label if head == 0 else "")
            if layer == 0:
                ax.set_title(f"head {head}", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def probe_map_grid(maps, heads: Sequence[tuple[int, int]], title: str):
    """Attention of the listed heads on one probe sequence, dense row above sparse (``maps`` [2, k, T, T])."""
    fig = head_grid(maps, row_labels=["dense", "sparse"], cell_size=2.0, title=title)
    for ax, (layer, head) in zip(fig.axes[: len(heads)], heads):
        ax.set_title(f"a{layer}.h{head}", fontsize=9)
    return fig


def _score_panel(ax, scores: np.ndarray, threshold: float, cmap: str, title: str, annotate: bool):
    image = ax.imshow(scores, vmin=0.0, vmax=1.0, cmap=cmap, aspect="auto", interpolation="nearest")
    if annotate:
        for (layer, head), value in np.ndenumerate(scores):
            ax.text(head, layer, f"{DECIMAL2(value)}{'*' if value >= threshold else ''}", ha="center", va="center",
                    fontsize=7)
        ax.set_xticks(range(scores.shape[1]))
        ax.set_yticks(range(scores.shape[0]))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.grid(False)
    ax.set_title(title, fontsize=10)
    return image


def induction_score_grids(scores: dict, threshold: float):
    """One layer x head panel of induction scores per model (``{"dense": [L, H], "sparse": ...}``), heads at or
    above ``threshold`` starred; dense in blues, sparse in oranges, as everywhere in the book."""
    arrays = {label: to_numpy(s) for label, s in scores.items()}
    layers, heads = next(iter(arrays.values())).shape
    annotate = layers * heads <= 64
    width = (2.0 * heads + 3.0) if annotate else 4.0 * len(arrays)
    fig, axes = plt.subplots(1, len(arrays), figsize=(min(width, 14.0), 0.7 * min(layers, 24) + 1.8),
                             constrained_layout=True, squeeze=False)
    for ax, (label, values) in zip(axes[0], arrays.items()):
        cmap = "Oranges" if label == "sparse" else "Blues"
        image = _score_panel(ax, values, threshold, cmap, f"{label}: induction score (* ≥ {SETTING(threshold)})", annotate)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.04)
    return fig


def kept_by_head(panels: Sequence[tuple[object, str, bool]]):
    """One [layer, head] map of kept edges (%) per ``(percent, title, is_sparse)`` panel on a log colour scale
    (a head keeping none is white); sparse post-trained models in oranges, untrained gates in blues."""
    from matplotlib.colors import LogNorm

    if not panels:
        raise ValueError("panels: need at least one (percent, title, is_sparse) map")
    fig, axes = _panel_grid(len(panels), columns=2, panel=(4.2, 4.0))
    for ax, (percent, title, is_sparse) in zip(axes, panels):
        percent = to_numpy(percent)
        kept = percent[percent > 0]
        floor = max(float(kept.min()) if kept.size else 1e-3, 1e-3)
        layers, heads = percent.shape
        sns.heatmap(percent, mask=percent <= 0, ax=ax, cmap="Oranges" if is_sparse else "Blues",
                    norm=LogNorm(vmin=floor, vmax=100.0), annot=percent.size <= 64, fmt=".2g",
                    annot_kws={"fontsize": 7}, xticklabels=max(1, heads // 8), yticklabels=max(1, layers // 10),
                    cbar_kws={"label": "kept edges (%)", "fraction": 0.05})
        ax.grid(False)
        ax.set_facecolor("white")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(title, fontsize=9)
    return fig


def kept_by_layer(percent, *, title: str | None = None):
    """A model x layer heatmap of kept edges (%) from a frame indexed by layer with one column per model (a model
    with fewer layers leaves its deeper cells blank, and so does a layer keeping no edge); log colour scale, every
    other cell annotated."""
    from matplotlib.colors import LogNorm

    percent = percent.astype(float).T
    values = percent.to_numpy()
    kept = values[np.isfinite(values) & (values > 0)]
    if not kept.size:
        raise ValueError("percent: no layer keeps any edge; nothing to draw")
    models, layers = percent.shape
    fig, ax = plt.subplots(figsize=(min(10.0, 0.42 * layers + 2.8), 0.5 * models + 1.4), constrained_layout=True)
    sns.heatmap(percent, mask=~np.isfinite(values) | (values <= 0), ax=ax, cmap="Oranges", annot=True, fmt=".2g",
                norm=LogNorm(vmin=max(float(kept.min()), 1e-3), vmax=100.0), annot_kws={"fontsize": 7},
                cbar_kws={"label": "kept edges (%)"}, linewidths=0.5, linecolor="white")
    ax.grid(False)
    ax.set_facecolor("white")
    ax.set_xlabel("layer")
    ax.set_ylabel("")
    ax.tick_params(axis="y", rotation=0)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def selectivity_maps(maps: dict, *, title: str | None = None):
    """Heatmaps, two to a row, of selectivity tables (title -> frame of rows x columns in [-1, 1]), on one diverging
    scale centred on 0: red where an edge is used more with the carry, blue where more without it."""
    if not maps:
        raise ValueError("maps: need at least one (title, table) entry")
    fig, axes = _panel_grid(len(maps), columns=2, panel=(3.6, 3.2))
    for index, (ax, (name, table)) in enumerate(zip(axes, maps.items())):
        last = index % 2 == 1 or index == len(maps) - 1
        sns.heatmap(table.astype(float), ax=ax, cmap="vlag", center=0.0, vmin=-1.0, vmax=1.0, annot=True, fmt=".2f",
                    annot_kws={"fontsize": 7}, cbar=last, cbar_kws={"label": "selectivity (with − without)"},
                    linewidths=0.5, linecolor="white", yticklabels=index % 2 == 0)
        ax.grid(False)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(table.index.name or "" if index % 2 == 0 else "")
        ax.set_xlabel(table.columns.name or "")
        ax.tick_params(axis="y", rotation=0)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
