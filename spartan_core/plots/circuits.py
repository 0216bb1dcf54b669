"""Circuits: the paper's Figure-1 attention graphs and what they draw, the carry edge, the attributed component
circuit (nodes by layer, kept edges coloured by the input they feed: q, k, v, MLP, logits), and circuit size
(explained effect against what is kept, dense / sparse ratios)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyArrowPatch

from ..circuits.patching import EdgeScores
from ..formatting import SETTING
from .style import DENSE, SEQUENCE, SPARSE, TARGET, to_numpy


def _attention_graph(ax, maps: np.ndarray, tokens: Sequence[str], min_weight: float, title: str):
    """The paper's Figure-1 view of one sequence: tokens across, residual-stream levels up; head h of layer l draws
    a line from key j at level l to query i at level l+1 for every causal weight >= ``min_weight``."""
    from matplotlib.collections import LineCollection
    from matplotlib.colors import to_rgba

    layers, heads, length = maps.shape[0], maps.shape[1], maps.shape[-1]
    colours = list(SEQUENCE)
    offsets = np.linspace(-0.18, 0.18, heads) if heads > 1 else np.zeros(1)
    for layer in range(layers):
        for head in range(heads):
            queries, keys = np.nonzero(np.tril(maps[layer, head]) >= min_weight)
            if not len(queries):
                continue
            strength = np.minimum(maps[layer, head, queries, keys], 1.0)
            x = offsets[head]
            segments = [[(j + x, layer), (i + x, layer + 1)] for i, j in zip(queries, keys)]
            rgba = [to_rgba(colours[head % len(colours)], alpha=0.15 + 0.85 * float(v)) for v in strength]
            ax.add_collection(LineCollection(segments, colors=rgba, linewidths=0.4 + 2.2 * strength,
                                             capstyle="round", zorder=1))
    grid_x, grid_y = np.meshgrid(np.arange(length), np.arange(layers + 1))
    ax.scatter(grid_x.ravel(), grid_y.ravel(), s=10, color=TARGET, zorder=2)
    ax.set_xticks(range(length), list(tokens))
    ax.set_yticks(range(layers + 1), ["emb"] + [f"L{layer}" for layer in range(layers)])
    ax.set_xlim(-0.6, length - 0.4)
    ax.set_ylim(-0.3, layers + 0.3)
    ax.grid(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.tick_params(length=0)
    ax.set_title(title)


def attention_graphs(maps: dict, texts: Sequence[str], captions: Sequence[str], min_weight: float):
    """Figure 1 redrawn: one row per problem (``texts``, one character per token), one column per model
    (``{"dense": [P, L, H, T, T], "sparse": ...}``), so the models sit side by side and two panels fit the text
    column; the same drawing rule for every panel."""
    arrays = {label: to_numpy(m) for label, m in maps.items()}
    for label, values in arrays.items():
        if values.ndim != 5 or values.shape[0] != len(texts) or values.shape[-1] != len(texts[0]):
            raise ValueError(f"maps: {label} must be [problems={len(texts)}, layers, heads, T, T], got {values.shape}")
    fig, axes = plt.subplots(len(texts), len(arrays), figsize=(3.4 * len(arrays), 2.5 * len(texts)), squeeze=False,
                             constrained_layout=True)
    for column, (label, values) in enumerate(arrays.items()):
        for row, (text, caption) in enumerate(zip(texts, captions)):
            _attention_graph(axes[row, column], values[row], list(text), min_weight, f"{label}: {text} ({caption})")
    heads = next(iter(arrays.values())).shape[2]
    for head in range(heads):
        axes[0, -1].plot([], [], color=SEQUENCE[head % len(SEQUENCE)], lw=2, label=f"head {head}")
    fig.legend(loc="outside lower center", ncols=heads, frameon=False)
    return fig


def edges_drawn(frame, *, min_weight: float):
    """Edges drawn per problem (one row each: ``problem``, ``carry``, ``dense``, ``sparse``) on a log scale, the
    problems grouped by carry class: how much less there is to read in the sparse model's graph."""
    frame = frame.sort_values(["carry", "problem"]).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(max(6.4, 0.28 * len(frame) + 2), 3.4), constrained_layout=True)
    for column, colour in (("dense", DENSE), ("sparse", SPARSE)):
        ax.scatter(frame.index, frame[column].clip(lower=0.8), color=colour, s=22, label=column, zorder=3)
    ax.set_yscale("log")
    ax.set_xticks(frame.index)
    ax.set_xticklabels([f"{p[:5]} ({c})" for p, c in zip(frame["problem"], frame["carry"])], rotation=90, fontsize=7)
    ax.set_ylabel(f"edges with weight ≥ {SETTING(min_weight)}")
    ax.set_title("Edges drawn per problem: each dot one model on one problem", fontsize=10)
    ax.legend(loc="center right")
    return fig


def carry_edge_bars(per_class, title: str):
    """Bars per carry class (``per_class``: index carry classes; columns ``sparse_kept``, ``sparse_weight``,
    ``dense_weight``) for one attention edge."""
    labels = {"sparse_kept": "sparse: kept frequency", "sparse_weight": "sparse: mean weight",
              "dense_weight": "dense: mean weight"}
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    per_class.rename(columns=labels).plot.bar(ax=ax, color=[SPARSE, "#f0b890", DENSE], rot=0, width=0.8)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("carry class")
    ax.set_ylabel("share of problems / weight")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def circuit_pair(scores: dict, n_edges: int, n_layers: int, n_heads: int):
    """The top ``n_edges`` component edges of each model's attribution (``{"dense": EdgeScores, ...}``), side by
    side."""
    fig, axes = plt.subplots(1, len(scores), figsize=(5.0 * len(scores), 6.0), constrained_layout=True, squeeze=False)
    for ax, (label, edge_scores) in zip(axes[0], scores.items()):
        draw_circuit(edge_scores, n_edges, n_layers=n_layers, n_heads=n_heads, ax=ax,
                     title=f"{label}: top {n_edges} edges ({edge_scores.method})")
    return fig


def circuit_curves(curves, needed=None, *, threshold: float = 0.9, title: str | None = None):
    """Explained effect against edges kept (log x) and heads kept (linear x), dense and sparse, one line style per
    ablation; lines are the mean over prompt sets, bands their min-max. ``curves``/``needed``: the frames of
    :func:`spartan_core.circuits.size_study`; with ``needed``, each model's mean count at ``threshold`` is marked."""
    import pandas as pd

    curves = pd.DataFrame(curves)
    colours = {"dense": DENSE, "sparse": SPARSE}
    dashes = {"resample": "-", "mean": "--"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    for ax, kind in zip(axes, ("edges", "heads")):
        part = curves[curves["kind"] == kind]
        for (model, ablation), group in part.groupby(["model", "ablation"], sort=False):
            stats = group.groupby("kept")["explained"].agg(["mean", "min", "max"])
            x = stats.index.to_numpy().astype(float)
            if kind == "edges":
                x = np.maximum(x, 0.7)  # the empty circuit sits just left of 1 on the log axis
            colour = colours.get(model, TARGET)
            ax.plot(x, stats["mean"], dashes.get(ablation, ":"), color=colour, label=f"{model}, {ablation}")
            ax.fill_between(x, stats["min"], stats["max"], color=colour, alpha=0.15, linewidth=0)
            if needed is not None:
                at = needed[(needed["kind"] == kind) & (needed["model"] == model) & (needed["ablation"] == ablation)
                            & np.isclose(needed["threshold"], threshold)]["needed"].mean()
                if np.isfinite(at):
                    ax.axvline(at, color=colour, linestyle=dashes.get(ablation, ":"), linewidth=0.8, alpha=0.7)
        ax.axhline(threshold, color=TARGET, linewidth=0.8, linestyle=":")
        if kind == "edges":
            ax.set_xscale("log")
        total = int(part["total"].max()) if "total" in part and len(part) else None
        ax.set_xlabel(f"{kind} kept" + (f" (of {total})" if total else ""))
        ax.set_ylabel("explained effect")
        ax.set_ylim(-0.2, 1.15)
    axes[1].legend(loc="lower right")
    if title:
        fig.suptitle(title)
    return fig


def ratio_draws(draws, paper: Sequence = (), *, ylabel: str = "dense / sparse"):
    """Dense / sparse circuit-size ratios of every draw, one panel per kind (``edges``, ``heads``): per (task,
    ablation) group, one column of points per training seed (a point per prompt set, a short bar at the seed's
    mean, one colour per seed) and a black bar at the mean over all draws; ``paper`` (items with kind, low, high)
    adds the paper's ranges as bands labelled as the paper's. ``draws`` has the columns task, ablation, kind,
    train_seed, prompt_seed and ratio (NaN ratios are left out)."""
    import pandas as pd

    draws = pd.DataFrame(draws).dropna(subset=["ratio"])
    kinds = [k for k in ("edges", "heads") if k in set(draws["kind"])] or ["edges"]
    seeds = sorted(draws["train_seed"].unique().tolist())
    colour = {s: SEQUENCE[i % len(SEQUENCE)] for i, s in enumerate(seeds)}
    offsets = np.linspace(-0.3, 0.3, len(seeds)) if len(seeds) > 1 else np.zeros(1)
    fig, axes = plt.subplots(len(kinds), 1, figsize=(7.2, 3.4 * len(kinds)), squeeze=False, constrained_layout=True)
    for ax, kind in zip(axes[:, 0], kinds):
        part = draws[draws["kind"] == kind]
        groups = list(part.groupby(["task", "ablation"], sort=False))
        for g, ((task, ablation), group) in enumerate(groups):
            for offset, seed in zip(offsets, seeds):
                values = group[group["train_seed"] == seed]["ratio"].to_numpy(dtype=float)
                if not len(values):
                    continue
                jitter = np.linspace(-0.04, 0.04, len(values)) if len(values) > 1 else np.zeros(1)
                ax.scatter(g + offset + jitter, values, s=22, color=colour[seed], alpha=0.8, zorder=3,
                           label=f"training seed {seed}" if g == 0 else None)
                ax.hlines(values.mean(), g + offset - 0.07, g + offset + 0.07, color=colour[seed], linewidth=2,
                          zorder=4)
            ax.hlines(group["ratio"].mean(), g - 0.42, g + 0.42, color=TARGET, linewidth=1.2, zorder=2,
                      label="mean over all draws" if g == 0 else None)
        for reported in paper:
            if reported.kind == kind:
                ax.axhspan(reported.low, reported.high, color=TARGET, alpha=0.08, zorder=0,
                           label=f"the paper, {kind}: {SETTING(reported.low)}–{SETTING(reported.high)}×")
        ax.axhline(1, color=TARGET, linewidth=0.8, linestyle=":")
        ax.set_yscale("log")
        ax.set_xticks(range(len(groups)), [f"{t}\n{a}" for (t, a), _ in groups], fontsize=8)
        ax.set_xlabel("task and ablation")
        ax.set_xlim(-0.6, max(len(groups), 1) - 0.4)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{kind}: one point per training seed x prompt set", fontsize=10)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return fig


_INPUT_COLOURS = {"q": "#4c72b0", "k": "#55a868", "v": "#c44e52", "mlp": "#8c8c8c", "logits": "#333333"}


def _node_positions(n_layers: int, n_heads: int) -> dict[str, tuple[float, float]]:
    """(x, y) of every node: embedding at the bottom, each layer's heads in a row, its MLP above and to the right,
    logits on top."""
    centre = (n_heads - 1) / 2
    positions = {"emb": (centre, 0.0), "logits": (centre, 2.0 * n_layers + 1)}
    for layer in range(n_layers):
        for head in range(n_heads):
            positions[f"a{layer}.h{head}"] = (float(head), 2.0 * layer + 1)
        positions[f"m{layer}"] = (float(n_heads), 2.0 * layer + 2)
    return positions


def _input_anchor(name: str, positions, n_heads: int, n_kv_heads: int) -> tuple[float, float, str]:
    """Where an edge into input ``name`` ends, and the input kind."""
    if name == "logits" or name.startswith("m"):
        x, y = positions[name]
        return x, y - 0.12, "logits" if name == "logits" else "mlp"
    node, kind = name.rsplit(".", 1)
    layer_part, head_part = node.split(".")
    if head_part.startswith("kv"):
        group = int(head_part[2:])
        size = n_heads // n_kv_heads
        x = float(np.mean(range(group * size, (group + 1) * size)))
        y = positions[f"{layer_part}.h0"][1]
    else:
        x, y = positions[node]
    return x + {"q": -0.18, "k": 0.0, "v": 0.18}[kind], y - 0.12, kind


def _target_nodes(name: str, n_heads: int, n_kv_heads: int) -> list[str]:
    """The node(s) an input belongs to (a key/value input of grouped-query attention feeds its whole group)."""
    if name == "logits" or name.startswith("m"):
        return [name]
    node = name.rsplit(".", 1)[0]
    layer_part, head_part = node.split(".")
    if not head_part.startswith("kv"):
        return [node]
    size = n_heads // n_kv_heads
    group = int(head_part[2:])
    return [f"{layer_part}.h{h}" for h in range(group * size, (group + 1) * size)]


def draw_circuit(scores: EdgeScores, keep: torch.Tensor | int, *, n_layers: int, n_heads: int,
                 n_kv_heads: int | None = None, ax=None, title: str | None = None):
    """Draw the kept edges (``keep``: bool mask over edges, or n for the top-n by |score|).

    Line width and opacity scale with |score|; nodes touched by a kept edge are drawn filled, the rest hollow.
    Returns the matplotlib figure.
    """
    n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
    if isinstance(keep, int):
        keep = scores.top_edges(keep)
    keep = torch.as_tensor(keep, dtype=torch.bool)
    if keep.shape != (len(scores.edges),):
        raise ValueError(f"keep: expected a mask over {len(scores.edges)} edges, got shape {tuple(keep.shape)}")
    positions = _node_positions(n_layers, n_heads)
    if ax is None:
        fig, ax = plt.subplots(figsize=(2.2 + 1.1 * n_heads, 1.0 + 1.0 * (2 * n_layers + 1)))
    else:
        fig = ax.figure
    kept_index = keep.nonzero(as_tuple=True)[0].tolist()
    magnitude = scores.scores.abs()
    top = float(magnitude[kept_index].max()) if kept_index else 1.0
    active = set()
    for i in kept_index:
        source, target = scores.edges[i]
        x0, y0 = positions[source]
        x1, y1, kind = _input_anchor(target, positions, n_heads, n_kv_heads)
        strength = float(magnitude[i]) / top if top > 0 else 1.0
        ax.add_patch(FancyArrowPatch(
            (x0, y0 + 0.12), (x1, y1), connectionstyle="arc3,rad=0.15", arrowstyle="-",
            color=_INPUT_COLOURS[kind], lw=0.5 + 3.0 * strength, alpha=0.25 + 0.75 * strength, zorder=1,
        ))
        active.add(source)
        active.update(_target_nodes(target, n_heads, n_kv_heads))
    for name, (x, y) in positions.items():
        filled = name in active
        shape = "s" if name.startswith("a") else "o"
        ax.scatter([x], [y], s=260, marker=shape, zorder=2, edgecolors="#333333",
                   facecolors="#f2c14e" if filled else "white", linewidths=1.0)
        ax.annotate(name, (x, y), ha="center", va="center", fontsize=6, zorder=3)
    for kind, colour in _INPUT_COLOURS.items():
        ax.plot([], [], color=colour, lw=2, label=kind)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False, title="input",
              title_fontsize=7)
    ax.set_xlim(-0.7, n_heads + 0.7)
    ax.set_ylim(-0.6, 2 * n_layers + 1.6)
    ax.set_xticks([])
    ax.set_yticks([0] + [2 * l + 1 for l in range(n_layers)] + [2 * n_layers + 1])
    ax.set_yticklabels(["emb"] + [f"layer {l}" for l in range(n_layers)] + ["logits"])
    ax.grid(False)
    ax.set_title(title or f"{len(kept_index)} edges ({scores.method}, {scores.ablation} ablation)")
    return fig
