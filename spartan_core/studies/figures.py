"""Figures only chapters 4-7 draw, in the book's style (:mod:`spartan_core.plots`: its colours, its rc settings).
Each takes arrays or frames and returns the figure; labels are made here, where they are displayed."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from .. import plots
from .common import head_name

__all__ = ["induction_score_grids", "probe_map_grid", "attention_graphs", "carry_edge_bars", "circuit_pair",
           "size_ratio_bars", "pareto_panels", "controller_traces"]


def _score_panel(ax, scores: np.ndarray, threshold: float, cmap: str, title: str, annotate: bool):
    image = ax.imshow(scores, vmin=0.0, vmax=1.0, cmap=cmap, aspect="auto", interpolation="nearest")
    if annotate:
        for (layer, head), value in np.ndenumerate(scores):
            ax.text(head, layer, f"{value:.2f}{'*' if value >= threshold else ''}", ha="center", va="center",
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
    arrays = {label: plots.to_numpy(s) for label, s in scores.items()}
    layers, heads = next(iter(arrays.values())).shape
    annotate = layers * heads <= 64
    width = (2.0 * heads + 3.0) if annotate else 4.0 * len(arrays)
    fig, axes = plt.subplots(1, len(arrays), figsize=(min(width, 14.0), 0.7 * min(layers, 24) + 1.8),
                             constrained_layout=True, squeeze=False)
    for ax, (label, values) in zip(axes[0], arrays.items()):
        cmap = "Oranges" if label == "sparse" else "Blues"
        image = _score_panel(ax, values, threshold, cmap, f"{label}: induction score (* ≥ {threshold:g})", annotate)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.04)
    return fig


def _attention_graph(ax, maps: np.ndarray, tokens: Sequence[str], min_weight: float, title: str):
    """The paper's Figure-1 view of one sequence: tokens across, residual-stream levels up; head h of layer l draws
    a line from key j at level l to query i at level l+1 for every causal weight >= ``min_weight``."""
    from matplotlib.collections import LineCollection
    from matplotlib.colors import to_rgba

    layers, heads, length = maps.shape[0], maps.shape[1], maps.shape[-1]
    colours = list(plots.SEQUENCE)
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
    ax.scatter(grid_x.ravel(), grid_y.ravel(), s=10, color=plots.TARGET, zorder=2)
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
    """Figure 1 redrawn: one row per model (``{"dense": [P, L, H, T, T], "sparse": ...}``), one column per
    problem (``texts``, one character per token), the same drawing rule for every panel."""
    arrays = {label: plots.to_numpy(m) for label, m in maps.items()}
    for label, values in arrays.items():
        if values.ndim != 5 or values.shape[0] != len(texts) or values.shape[-1] != len(texts[0]):
            raise ValueError(f"maps: {label} must be [problems={len(texts)}, layers, heads, T, T], got {values.shape}")
    fig, axes = plt.subplots(len(arrays), len(texts), figsize=(4.6 * len(texts), 3.2 * len(arrays)), squeeze=False,
                             constrained_layout=True)
    for row, (label, values) in enumerate(arrays.items()):
        for column, (text, caption) in enumerate(zip(texts, captions)):
            _attention_graph(axes[row, column], values[column], list(text), min_weight, f"{label}: {text} ({caption})")
    heads = next(iter(arrays.values())).shape[2]
    for head in range(heads):
        axes[0, -1].plot([], [], color=plots.SEQUENCE[head % len(plots.SEQUENCE)], lw=2, label=f"head {head}")
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def carry_edge_bars(per_class, title: str):
    """Bars per carry class (``per_class``: index carry classes; columns ``sparse_kept``, ``sparse_weight``,
    ``dense_weight``) for one attention edge."""
    labels = {"sparse_kept": "sparse: kept frequency", "sparse_weight": "sparse: mean weight",
              "dense_weight": "dense: mean weight"}
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    per_class.rename(columns=labels).plot.bar(ax=ax, color=[plots.SPARSE, "#f0b890", plots.DENSE], rot=0, width=0.8)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("carry class")
    ax.set_ylabel("share of problems / weight")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def circuit_pair(scores: dict, n_edges: int, n_layers: int, n_heads: int):
    """The top ``n_edges`` component edges of each model's attribution (``{"dense": EdgeScores, ...}``), side by
    side."""
    from ..circuits import draw_circuit

    fig, axes = plt.subplots(1, len(scores), figsize=(6.5 * len(scores), 7.5), constrained_layout=True, squeeze=False)
    for ax, (label, edge_scores) in zip(axes[0], scores.items()):
        draw_circuit(edge_scores, n_edges, n_layers=n_layers, n_heads=n_heads, ax=ax,
                     title=f"{label}: top {n_edges} edges ({edge_scores.method})")
    return fig


def size_ratio_bars(ratios, paper: Sequence):
    """Dense / sparse circuit size at the threshold, one bar per (task, ablation, kind) row of ``ratios``
    (columns task, ablation, kind, ratio_mean, ratio_min, ratio_max), the paper's ranges (``paper``: items with
    kind, low, high) as bands labelled as the paper's."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    colour = {"edges": plots.SPARSE, "heads": plots.DENSE}
    x = np.arange(len(ratios))
    spans = np.array([ratios["ratio_mean"] - ratios["ratio_min"], ratios["ratio_max"] - ratios["ratio_mean"]])
    ax.bar(x, ratios["ratio_mean"], color=[colour[k] for k in ratios["kind"]], yerr=spans, capsize=3, zorder=3)
    for reported in paper:
        ax.axhspan(reported.low, reported.high, color=colour[reported.kind], alpha=0.12, zorder=0,
                   label=f"the paper, {reported.kind}: {reported.low:g}–{reported.high:g}×")
    ax.axhline(1, color=plots.TARGET, linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(x, [f"{t}\n{a}, {k}" for t, a, k in zip(ratios["task"], ratios["ablation"], ratios["kind"])],
                  fontsize=8)
    ax.set_ylabel("dense / sparse")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("how much smaller the sparse circuit is (bars: this run; bands: the paper)")
    return fig


def probe_map_grid(maps, heads: Sequence[tuple[int, int]], title: str):
    """Attention of the listed heads on one probe sequence, dense row above sparse (``maps`` [2, k, T, T])."""
    fig = plots.head_grid(maps, row_labels=["dense", "sparse"], cell_size=2.0, title=title)
    for ax, (layer, head) in zip(fig.axes[: len(heads)], heads):
        ax.set_title(head_name(layer, head), fontsize=9)
    return fig


def _policy_colours(policies: Sequence[str]) -> dict:
    """One colour per fixed policy, never the learned gate's (``plots.SPARSE``) or the dense model's."""
    palette = [c for c in plots.SEQUENCE if c not in (plots.SPARSE, plots.DENSE)]
    return {policy: palette[i % len(palette)] for i, policy in enumerate(policies)}


def pareto_panels(points, *, dense_ce: float, dense_exact_match: float | None, title: str):
    """Held-out CE (and exact match, where measured) against kept keys per query, log x: each fixed policy a curve
    over its budgets, fine-tuned solid and as-is dashed; the learned gate a star; the dense model dotted.
    ``points`` is :meth:`~spartan_core.studies.baselines.Pareto.frame`."""
    import pandas as pd
    from matplotlib.ticker import FuncFormatter, NullFormatter

    points = pd.DataFrame(points)
    metrics = [("heldout_ce", "held-out CE (nats)", dense_ce)]
    if dense_exact_match is not None and points["exact_match"].notna().all():
        metrics.append(("exact_match", "held-out exact match", dense_exact_match))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics) + 1.6, 3.8), squeeze=False,
                             constrained_layout=True)
    fixed = points[points["stage"] != "learned"]
    colours = _policy_colours(list(dict.fromkeys(fixed["policy"])))
    learned = points[points["stage"] == "learned"]
    for ax, (column, label, dense) in zip(axes[0], metrics):
        for policy, colour in colours.items():
            for stage, style in (("fine-tuned", "-o"), ("as is", "--x")):
                curve = fixed[(fixed["policy"] == policy) & (fixed["stage"] == stage)].sort_values("kept_per_query")
                ax.plot(curve["kept_per_query"], curve[column], style, color=colour, ms=4,
                        lw=1.4 if stage == "fine-tuned" else 0.8, alpha=1.0 if stage == "fine-tuned" else 0.6,
                        label=f"{policy}, {stage}")
        ax.plot(learned["kept_per_query"], learned[column], "*", color=plots.SPARSE, ms=16, mec="black", mew=0.6,
                label="learned gate (SPARTAN)")
        ax.axhline(dense, color=plots.DENSE, ls=":", lw=1.2, label="dense model")
        values = points[column].dropna()
        if column == "heldout_ce" and values.min() > 0 and values.max() / values.min() > 100:
            ax.set_yscale("log")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("kept keys per query (held-out, log scale)")
        ax.set_ylabel(label)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.suptitle(title, fontsize=11)
    return fig


def controller_traces(evals, history, *, tau: float, title: str):
    """Per controller (one colour each): kept keys per query and CE at each evaluation (training data,
    deterministic masks, tau dashed) and beta at each step, against the step; seaborn line plots of the mean over
    seeds with a band over their min-max, as every curve over seeds in the book."""
    import pandas as pd

    evals, history = pd.DataFrame(evals), pd.DataFrame(history)
    labels = list(dict.fromkeys(evals["label"]))
    palette = {label: plots.SEQUENCE[i % len(plots.SEQUENCE)] for i, label in enumerate(labels)}
    seeds = evals["seed"].nunique()
    fig, axes = plt.subplots(1, 3, figsize=(14.0, 3.8), constrained_layout=True)
    panels = ((axes[0], evals, "eval_kept_per_query", "kept keys per query (eval)"),
              (axes[1], evals, "eval_ce", "CE (eval, training data)"),
              (axes[2], history, "beta", "β"))
    for ax, frame, column, ylabel in panels:
        sns.lineplot(frame, x="step", y=column, hue="label", hue_order=labels, palette=palette, errorbar=("pi", 100),
                     lw=1.2, ax=ax, legend=ax is axes[1])
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
    axes[1].axhline(tau, color=plots.TARGET, ls="--", lw=1, label="τ")
    axes[1].legend(fontsize=8, title=f"mean over {seeds} seeds, band min–max" if seeds > 1 else None,
                   title_fontsize=8)
    fig.suptitle(title, fontsize=11)
    return fig
