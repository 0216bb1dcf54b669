"""The book's one figure style, shared by every notebook: seaborn's.

``apply_style()`` (once per notebook) sets seaborn's theme with the book's fonts, sizes and colours; dense models
are always drawn in ``DENSE`` (grey-blue) and sparse ones in ``SPARSE`` (orange), constraint targets as dashed
``TARGET`` lines. Attention maps and per-head tables are seaborn heatmaps; curves over training seeds are seaborn
line plots, the mean with a band over the seeds' min-max.
``save(fig, results, name)`` writes a figure through the results writer, so every PNG in ``results/`` has
provenance. Every other function takes arrays or frames and returns a figure: ``head_grid`` draws attention maps
the same way in every chapter, ``training_dynamics`` a post-training run (edges, multiplier, CE against its
target), and the rest one chapter's figure each.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

__all__ = [
    "DENSE",
    "SPARSE",
    "TARGET",
    "SEQUENCE",
    "RC",
    "apply_style",
    "save",
    "attention_heatmap",
    "attention_panels",
    "head_grid",
    "weight_sums",
    "keep_frequency",
    "training_dynamics",
    "penalty_tradeoff",
    "edges_vs_loss",
    "kept_by_head",
    "kept_by_layer",
    "selectivity_maps",
    "circuit_curves",
    "to_numpy",
]

DENSE = "#4c72b0"
SPARSE = "#dd8452"
TARGET = "#333333"
SEQUENCE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
ATTENTION_CMAP = "Blues"

RC = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "image.cmap": ATTENTION_CMAP,
    "axes.prop_cycle": mpl.cycler(color=list(SEQUENCE)),
}


def apply_style() -> None:
    """Apply the book's style for the rest of the session (a notebook's first cell): seaborn's white-grid theme
    in the book's palette, with the book's sizes on top."""
    sns.set_theme(context="notebook", style="whitegrid", palette=list(SEQUENCE), rc=RC)


def save(fig, results, name: str) -> None:
    """Write ``fig`` as ``<results>/<name>.png`` through the one results writer (the companion's ``ResultsDir``,
    passed in: the library never imports the companion)."""
    results.figure(fig, name)


def to_numpy(x) -> np.ndarray:
    """A float numpy array from a torch tensor (any device/dtype) or array-like."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


def attention_heatmap(ax, weights, tokens: Sequence[str] | None = None, *, title: str | None = None,
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
    """One row of [query, key] maps, each ``(matrix, title)``: the steps of the mechanism side by side."""
    if not panels:
        raise ValueError("panels: need at least one (matrix, title) pair")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.4), squeeze=False,
                             constrained_layout=True)
    for ax, (matrix, title) in zip(axes[0], panels):
        attention_heatmap(ax, to_numpy(matrix), title=title)
    return fig


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
            attention_heatmap(ax, w[layer, head], tokens if label_tokens else None, vmax=vmax)
            ax.set_xlabel("")
            label = row_labels[layer] if row_labels is not None else f"layer {layer}"
            ax.set_ylabel(label if head == 0 else "")
            if layer == 0:
                ax.set_title(f"head {head}", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def training_dynamics(history, evals=None, *, tau: float | None = None, best_step: int | None = None,
                      title: str | None = None):
    """The paper's training-dynamics figure from a post-training run's per-step ``history`` and ``evals``
    (lists of dicts or DataFrames as logged by :func:`spartan_core.training.post_train`): expected edge fraction and
    deterministic kept fraction (log), the GECO multiplier beta (log), training CE with its EMA against tau,
    and the evaluation CE against tau. A phase with beta held down (``phase == "floor"``) is shaded."""
    import pandas as pd

    h = pd.DataFrame(history)
    e = pd.DataFrame(evals if evals is not None else [])
    if h.empty:
        raise ValueError("history: empty; nothing to plot")
    fig, axes = plt.subplots(4, 1, figsize=(7.0, 9.0), sharex=True, constrained_layout=True)
    floor = h[h["phase"] == "floor"] if "phase" in h else h.iloc[:0]
    for ax in axes:
        if len(floor):
            ax.axvspan(floor["step"].min(), floor["step"].max(), color=DENSE, alpha=0.08, lw=0)
        if best_step is not None:
            ax.axvline(best_step, color=TARGET, lw=0.8, ls=":", label="kept checkpoint" if ax is axes[0] else None)

    ax = axes[0]
    ax.plot(h["step"], h["expected_fraction"], color=SPARSE, lw=1, label="expected fraction (sampled, training)")
    if "eval_kept_fraction" in e:
        ax.plot(e["step"], e["eval_kept_fraction"], "o-", color=TARGET, ms=3, lw=0.8,
                label="kept fraction (deterministic, eval)")
    ax.set_yscale("log")
    ax.set_ylabel("edge fraction")
    ax.legend(loc="upper right")

    ax = axes[1]
    ax.plot(h["step"], h["beta"], color=SPARSE, lw=1)
    ax.set_yscale("log")
    ax.set_ylabel("GECO multiplier β")

    ax = axes[2]
    ax.plot(h["step"], h["ce"], color=SPARSE, lw=0.6, alpha=0.35, label="CE (sampled masks)")
    if "ce_ema" in h:
        ax.plot(h["step"], h["ce_ema"], color=SPARSE, lw=1.2, label="CE EMA")
    target = tau if tau is not None else (h["tau"].iloc[-1] if "tau" in h else None)
    if target is not None:
        ax.axhline(target, color=TARGET, ls="--", lw=1, label="target τ")
    ax.set_yscale("log")
    ax.set_ylabel("training CE (nats)")
    ax.legend(loc="upper right")

    ax = axes[3]
    if "eval_ce" in e:
        ax.plot(e["step"], e["eval_ce"], "o-", color=SPARSE, ms=3, lw=1, label="eval CE (deterministic masks)")
    if target is not None:
        ax.axhline(target, color=TARGET, ls="--", lw=1, label="target τ")
    ax.set_yscale("log")
    ax.set_ylabel("eval CE (nats)")
    ax.set_xlabel("post-training step")
    ax.legend(loc="upper right")
    if title:
        fig.suptitle(title)
    return fig


def penalty_tradeoff(runs, *, dense_ce: float, tau: float, split: str):
    """Kept edges against held-out CE (log-log) of GECO (a star) and fixed penalties (a line); ``runs`` has the
    columns ``method`` (``geco``/``fixed``), ``beta``, ``kept_fraction`` and ``heldout_ce``."""
    import pandas as pd

    runs = pd.DataFrame(runs)
    fixed, geco = runs[runs["method"] == "fixed"], runs[runs["method"] == "geco"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(fixed["kept_fraction"], fixed["heldout_ce"], "s-", color=SEQUENCE[2], label="fixed β")
    for _, row in fixed.iterrows():
        ax.annotate(f"β = {row['beta']:g}", (row["kept_fraction"], row["heldout_ce"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    ax.plot(geco["kept_fraction"], geco["heldout_ce"], "*", ms=14, color=SPARSE, label="GECO")
    ax.axhline(dense_ce, color=DENSE, ls=":", label="dense model")
    ax.axhline(tau, color=TARGET, ls="--", lw=1, label="τ (training CE, sampled masks)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("kept attention edges (fraction, deterministic masks)")
    ax.set_ylabel(f"held-out CE ({split} split, nats)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def edges_vs_loss(rows, *, paper_percent: tuple[float, float]):
    """Left: kept edges (%) against CE change (%) of each model's untrained gate (hollow) and sparse model
    (star), beside the paper's reported band. Right: kept keys per query. ``rows`` has the columns ``model``,
    ``context_length``, ``gated_kept_fraction``, ``gated_ce_increase_pct``, ``gated_kept_per_query`` and, for
    post-trained models, the same with ``sparse_``."""
    import pandas as pd

    rows = pd.DataFrame(rows).reset_index(drop=True)
    for column in ("sparse_kept_fraction", "sparse_ce_increase_pct", "sparse_kept_per_query"):
        if column not in rows:
            rows[column] = np.nan
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True)
    low, high = paper_percent
    ax.axvspan(low * 0.9, high * 1.1, color=TARGET, alpha=0.12, lw=0,
               label=f"paper, reported: {low:g}–{high:g} % kept at no loss increase")
    ax.axhline(0.0, color=TARGET, ls="--", lw=1)
    for index, row in rows.iterrows():
        colour = SEQUENCE[(index + 2) % len(SEQUENCE)]
        ax.scatter(100 * row["gated_kept_fraction"], row["gated_ce_increase_pct"], s=70, facecolors="none",
                   edgecolors=colour, linewidths=1.5, label=f"{row['model']}: untrained gate")
        if np.isfinite(row["sparse_kept_fraction"]):
            ax.scatter(100 * row["sparse_kept_fraction"], row["sparse_ce_increase_pct"], s=90, marker="*",
                       color=colour, label=f"{row['model']}: sparse post-trained")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlabel("kept attention edges (% of causal edges, held-out data)")
    ax.set_ylabel("CE change vs dense (%)")
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.18), ncol=2, fontsize=8)
    x = np.arange(len(rows))
    bx.bar(x - 0.2, rows["gated_kept_per_query"], width=0.4, color=DENSE, label="untrained gate")
    bx.bar(x + 0.2, rows["sparse_kept_per_query"], width=0.4, color=SPARSE, label="sparse post-trained")
    bx.set_xticks(x, [f"{m}\n(T = {t})" for m, t in zip(rows["model"], rows["context_length"])])
    bx.set_yscale("log")
    bx.set_ylabel("kept keys per query (mean)")
    bx.legend(loc="upper left")
    return fig


def kept_by_head(panels: Sequence[tuple[object, str, bool]]):
    """One [layer, head] map of kept edges (%) per ``(percent, title, is_sparse)`` panel on a log colour scale
    (a head keeping none is white); sparse post-trained models in oranges, untrained gates in blues."""
    from matplotlib.colors import LogNorm

    if not panels:
        raise ValueError("panels: need at least one (percent, title, is_sparse) map")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.0, 4.4), squeeze=False,
                             constrained_layout=True)
    for ax, (percent, title, is_sparse) in zip(axes[0], panels):
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
    """Side-by-side heatmaps of selectivity tables (title -> frame of rows x columns in [-1, 1]), on one diverging
    scale centred on 0: red where an edge is used more with the carry, blue where more without it."""
    if not maps:
        raise ValueError("maps: need at least one (title, table) entry")
    fig, axes = plt.subplots(1, len(maps), figsize=(2.6 * len(maps) + 1.2, 3.2), squeeze=False,
                             constrained_layout=True)
    for index, (ax, (name, table)) in enumerate(zip(axes[0], maps.items())):
        last = index == len(maps) - 1
        sns.heatmap(table.astype(float), ax=ax, cmap="vlag", center=0.0, vmin=-1.0, vmax=1.0, annot=True, fmt=".2f",
                    annot_kws={"fontsize": 7}, cbar=last, cbar_kws={"label": "selectivity (with − without)"},
                    linewidths=0.5, linecolor="white", yticklabels=index == 0)
        ax.grid(False)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(table.index.name or "" if index == 0 else "")
        ax.set_xlabel(table.columns.name or "")
        ax.tick_params(axis="y", rotation=0)
    if title:
        fig.suptitle(title, fontsize=10)
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
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 3.8), squeeze=False, constrained_layout=True)
    for ax, kind in zip(axes[0], kinds):
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
                           label=f"the paper, {kind}: {reported.low:g}–{reported.high:g}×")
        ax.axhline(1, color=TARGET, linewidth=0.8, linestyle=":")
        ax.set_yscale("log")
        ax.set_xticks(range(len(groups)), [f"{t}\n{a} ablation" for (t, a), _ in groups], fontsize=8)
        ax.set_xlim(-0.6, max(len(groups), 1) - 0.4)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{kind}: one point per training seed x prompt set", fontsize=10)
        ax.legend(loc="best", fontsize=8)
    return fig


__all__.append("ratio_draws")


def seed_spread(frame, columns, *, labels=None, colours=None, reference: float | None = None,
                reference_label: str | None = None, ylabel: str = "", title: str | None = None, seed: str = "seed",
                ax=None, ylim=None, integer: bool = False):
    """One measurement per column of ``frame`` (one row per training seed): each seed's value as a dot (marked
    with its seed when there are at most six), the mean as a short horizontal bar and the min-max as a vertical
    line. Columns with "dense"/"sparse" in their name take the book's dense/sparse colours; ``reference`` draws a
    dashed ``TARGET`` line (a threshold, a target); ``integer`` is for counts (whole-number ticks, from zero).
    Returns the figure (``ax``'s when one is given)."""
    import pandas as pd

    frame = pd.DataFrame(frame)
    columns = list(columns)
    labels = list(labels) if labels is not None else columns
    if colours is None:
        colours = [DENSE if "dense" in c else SPARSE if "sparse" in c else SEQUENCE[(i + 2) % len(SEQUENCE)]
                   for i, c in enumerate(columns)]
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(3.2, 1.3 * len(columns) + 1.6), 3.4), constrained_layout=True)
    else:
        fig = ax.figure
    seeds = frame[seed].tolist() if seed in frame else list(range(len(frame)))
    offsets = np.linspace(-0.12, 0.12, len(frame)) if len(frame) > 1 else np.zeros(1)
    for i, (column, colour) in enumerate(zip(columns, colours)):
        values = frame[column].to_numpy(dtype=float)
        ax.vlines(i, values.min(), values.max(), color=colour, linewidth=1.2, alpha=0.6)
        ax.hlines(values.mean(), i - 0.25, i + 0.25, color=colour, linewidth=2.2)
        ax.scatter(i + offsets, values, color=colour, s=22, zorder=3, edgecolor="white", linewidth=0.5)
        if len(values) <= 6:
            for x, value, name in zip(i + offsets, values, seeds):
                ax.annotate(str(name), (x, value), xytext=(4, 0), textcoords="offset points", fontsize=7,
                            va="center", color=TARGET)
    if reference is not None:
        ax.axhline(reference, color=TARGET, linestyle="--", linewidth=0.9, label=reference_label)
        if reference_label:
            ax.legend(loc="best", fontsize=8)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(labels)
    ax.set_xlim(-0.6, len(columns) - 0.4)
    if integer:
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        top = max(float(frame[c].max()) for c in columns)
        ax.set_ylim(-0.5, top + 0.5)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{len(frame)} training seeds: each dot one seed, bar the mean, line the min-max",
                 fontsize=10)
    return fig


__all__.append("seed_spread")


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
    ax.set_ylabel(f"edges with weight ≥ {min_weight:g}")
    ax.set_title("Edges drawn per problem: each dot one model on one problem", fontsize=10)
    ax.legend(loc="center right")
    return fig


__all__.append("edges_drawn")


def _per_seed(value, seeds) -> dict:
    """A per-seed mapping from a mapping, or from one value shared by every seed (None stays None)."""
    if isinstance(value, dict):
        return {seed: value.get(seed) for seed in seeds}
    return {seed: value for seed in seeds}


def _min_max_errors(values) -> tuple[float, list[list[float]]]:
    """Mean of ``values`` and its asymmetric error bar [[mean - min], [max - mean]] for ``errorbar``."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    return mean, [[max(mean - values.min(), 0.0)], [max(values.max() - mean, 0.0)]]


def training_dynamics_over_seeds(history, evals=None, *, tau=None, best_step=None, title: str | None = None):
    """:func:`training_dynamics` for several training seeds at once: ``history`` and ``evals`` carry a ``seed``
    column. Each panel is a seaborn line plot of the mean over seeds with a band over their min-max (expected edge
    fraction, beta, the training-CE EMA, the evaluation CE); the evaluations' kept fraction is one dot per seed in
    the seed's colour, and each seed's kept checkpoint a dotted line in it. ``tau`` and ``best_step``: one value or
    a mapping seed -> value; one shared tau is a single dashed line, per-seed taus dashed in the seed's colour."""
    import pandas as pd
    from matplotlib.lines import Line2D

    h = pd.DataFrame(history)
    e = pd.DataFrame(evals if evals is not None else [])
    if h.empty:
        raise ValueError("history: empty; nothing to plot")
    if "seed" not in h:
        h = h.assign(seed=0)
    if len(e) and "seed" not in e:
        e = e.assign(seed=0)
    seeds = list(dict.fromkeys(h["seed"].tolist()))
    colour = {seed: SEQUENCE[(i + 2) % len(SEQUENCE)] for i, seed in enumerate(seeds)}
    taus = _per_seed(tau if tau is not None else ({s: g["tau"].iloc[-1] for s, g in h.groupby("seed")}
                                                   if "tau" in h else None), seeds)
    bests = _per_seed(best_step, seeds)
    shared_tau = len({t for t in taus.values()}) == 1 and None not in taus.values()
    fig, axes = plt.subplots(4, 1, figsize=(7.0, 9.0), sharex=True, constrained_layout=True)
    floor = h[h["phase"] == "floor"] if "phase" in h else h.iloc[:0]
    band = ("pi", 100)  # the min-max over seeds
    panels = ((0, h, "expected_fraction"), (1, h, "beta"), (2, h, "ce_ema" if "ce_ema" in h else "ce"),
              (3, e, "eval_ce"))
    for index, frame, column in panels:
        if len(frame) and column in frame:
            sns.lineplot(frame, x="step", y=column, errorbar=band, color=SPARSE, lw=1, ax=axes[index],
                         marker="o" if frame is e else None, ms=3)
    for ax in axes:
        if len(floor):
            ax.axvspan(floor["step"].min(), floor["step"].max(), color=DENSE, alpha=0.08, lw=0)
    for seed in seeds:
        es, c = e[e["seed"] == seed] if len(e) else e, colour[seed]
        if "eval_kept_fraction" in es:
            axes[0].plot(es["step"], es["eval_kept_fraction"], "o", color=c, ms=3)
        if bests[seed] is not None:
            for ax in axes:
                ax.axvline(bests[seed], color=c, lw=0.8, ls=":")
        if not shared_tau and taus[seed] is not None:
            for ax in axes[2:]:
                ax.axhline(taus[seed], color=c, ls="--", lw=0.9)
    if shared_tau:
        for ax in axes[2:]:
            ax.axhline(next(iter(taus.values())), color=TARGET, ls="--", lw=1)
    over = f"mean over {len(seeds)} seeds, band min–max" if len(seeds) > 1 else "one seed"
    style_handles = [Line2D([], [], color=SPARSE, lw=1.5, label=f"expected fraction (sampled, training): {over}")]
    seed_handles = [Line2D([], [], color=colour[s], marker="o", ms=3, ls="",
                           label=f"seed {s}: kept fraction (deterministic, eval)") for s in seeds]
    if any(b is not None for b in bests.values()):
        style_handles.append(Line2D([], [], color=TARGET, lw=0.8, ls=":", label="kept checkpoint (seed's colour)"))
    axes[0].legend(handles=style_handles + seed_handles, loc="upper right", fontsize=8)
    axes[0].set_ylabel("edge fraction")
    axes[1].set_ylabel("GECO multiplier β")
    axes[2].set_ylabel("training CE EMA (nats)")
    tau_label = "target τ" if shared_tau else "target τ (each seed's, in its colour)"
    axes[2].legend(handles=[Line2D([], [], color=TARGET, ls="--", lw=1, label=tau_label)], loc="upper right")
    axes[3].set_ylabel("eval CE (nats)")
    axes[3].set_xlabel("post-training step")
    for ax in axes:
        ax.set_yscale("log")
    if title:
        fig.suptitle(title)
    return fig


def _level(ax, values, colour, label: str, ls: str) -> None:
    """One horizontal reference: a line when every seed has the same value, else a band over their min-max."""
    values = np.atleast_1d(np.asarray(values, dtype=float))
    if np.ptp(values) == 0:
        ax.axhline(values[0], color=colour, ls=ls, lw=1, label=label)
    else:
        ax.axhline(values.mean(), color=colour, ls=ls, lw=1, label=f"{label} (mean; band: min–max over seeds)")
        ax.axhspan(values.min(), values.max(), color=colour, alpha=0.15, lw=0)


def penalty_tradeoff_over_seeds(runs, *, dense_ce, tau, split: str):
    """:func:`penalty_tradeoff` over training seeds: each seed's run as a small marker (GECO a star, each fixed
    beta its own colour) and the mean over seeds as a large one with min-max error bars on both axes; the fixed
    betas' means are joined. ``runs`` has the columns ``run``, ``method``, ``beta``, ``seed``,
    ``kept_fraction`` and ``heldout_ce``; ``dense_ce`` and ``tau`` are one value or one per seed (a band)."""
    import pandas as pd

    runs = pd.DataFrame(runs)
    labels = list(dict.fromkeys(runs["run"].tolist()))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    means = []
    fixed_index = 0
    for label in labels:
        group = runs[runs["run"] == label]
        geco = (group["method"] == "geco").all()
        colour = SPARSE if geco else SEQUENCE[(2 + fixed_index) % len(SEQUENCE)]
        fixed_index += 0 if geco else 1
        marker, size = ("*", 14) if geco else ("s", 7)
        ax.plot(group["kept_fraction"], group["heldout_ce"], marker, ms=size * 0.55, color=colour, alpha=0.45,
                ls="")
        x, xerr = _min_max_errors(group["kept_fraction"])
        y, yerr = _min_max_errors(group["heldout_ce"])
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt=marker, ms=size, color=colour, capsize=3, lw=1,
                    label=f"{'GECO' if geco else label} (mean, min–max)")
        if not geco:
            means.append((x, y))
    if len(means) > 1:
        ax.plot(*zip(*means), "-", color=SEQUENCE[2], lw=0.8, alpha=0.6)
    _level(ax, dense_ce, DENSE, "dense model", ":")
    _level(ax, tau, TARGET, "τ (training CE, sampled masks)", "--")
    seeds = runs["seed"].nunique()
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("kept attention edges (fraction, deterministic masks)")
    ax.set_ylabel(f"held-out CE ({split} split, nats)")
    ax.set_title(f"{seeds} training seed{'s' if seeds > 1 else ''}: small markers one seed each", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def edges_vs_loss_over_seeds(rows, *, paper_percent: tuple[float, float]):
    """:func:`edges_vs_loss` with one row per model and training seed: each seed's untrained gate (hollow) and
    sparse model (star) as small markers, their mean over seeds as large ones with min-max error bars; the
    right panel's bars are the mean kept keys per query with min-max error bars and one dot per seed."""
    import pandas as pd

    rows = pd.DataFrame(rows).reset_index(drop=True)
    for column in ("sparse_kept_fraction", "sparse_ce_increase_pct", "sparse_kept_per_query"):
        if column not in rows:
            rows[column] = np.nan
    models = list(dict.fromkeys(rows["model"].tolist()))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True)
    low, high = paper_percent
    ax.axvspan(low * 0.9, high * 1.1, color=TARGET, alpha=0.12, lw=0,
               label=f"paper, reported: {low:g}–{high:g} % kept at no loss increase")
    ax.axhline(0.0, color=TARGET, ls="--", lw=1)
    for index, model in enumerate(models):
        group, colour = rows[rows["model"] == model], SEQUENCE[(index + 2) % len(SEQUENCE)]
        seeds = len(group)
        over = f", mean of {seeds} seeds" if seeds > 1 else ""
        for kind, marker, hollow, label in (("gated", "o", True, "untrained gate"),
                                            ("sparse", "*", False, "sparse post-trained")):
            part = group[np.isfinite(group[f"{kind}_kept_fraction"].astype(float))]
            if part.empty:
                continue
            xs, ys = 100 * part[f"{kind}_kept_fraction"].astype(float), part[f"{kind}_ce_increase_pct"].astype(float)
            face = "none" if hollow else colour
            if seeds > 1:
                ax.scatter(xs, ys, s=25, marker=marker, facecolors=face, edgecolors=colour, alpha=0.5,
                           linewidths=1.0)
            x, xerr = _min_max_errors(xs)
            y, yerr = _min_max_errors(ys)
            ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt=marker, ms=10 if hollow else 13, mfc=face,
                        mec=colour, color=colour, capsize=3, lw=1, label=f"{model}: {label}{over}")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.margins(x=0.15, y=0.15)
    ax.set_xlabel("kept attention edges (% of causal edges, held-out data)")
    ax.set_ylabel("CE change vs dense (%)")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower left", ncol=2, fontsize=8)
    for offset, kind, colour, label in ((-0.2, "gated", DENSE, "untrained gate"),
                                        (0.2, "sparse", SPARSE, "sparse post-trained")):
        labelled = False
        for index, model in enumerate(models):
            values = rows[rows["model"] == model][f"{kind}_kept_per_query"].astype(float).dropna()
            if values.empty:
                continue
            mean, err = _min_max_errors(values)
            bx.bar(index + offset, mean, width=0.4, color=colour, yerr=err if len(values) > 1 else None,
                   capsize=3, label=None if labelled else label)
            labelled = True
            if len(values) > 1:
                bx.scatter(np.full(len(values), index + offset), values, s=12, color=TARGET, zorder=3)
    contexts = [rows[rows["model"] == m]["context_length"].iloc[0] for m in models]
    bx.set_xticks(np.arange(len(models)), [f"{m}\n(T = {t})" for m, t in zip(models, contexts)])
    bx.set_yscale("log")
    bx.set_ylabel("kept keys per query (mean; dots: seeds)")
    bx.legend(loc="upper left")
    return fig


__all__.extend(["training_dynamics_over_seeds", "penalty_tradeoff_over_seeds", "edges_vs_loss_over_seeds"])
