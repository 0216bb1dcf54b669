"""The book's one figure style, shared by every notebook.

``with style():`` (or ``apply_style()`` once per notebook) sets fonts, sizes and colours; dense models are always
drawn in ``DENSE`` (grey-blue) and sparse ones in ``SPARSE`` (orange), constraint targets as dashed ``TARGET``
lines. ``save(fig, results, name)`` writes a figure through the results writer, so every PNG in ``results/`` has
provenance. ``attention_heatmap`` and ``head_grid`` draw attention maps the same way in every chapter;
``training_dynamics`` draws a post-training run (edges, multiplier, CE against its target).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

__all__ = [
    "DENSE",
    "SPARSE",
    "TARGET",
    "SEQUENCE",
    "RC",
    "style",
    "apply_style",
    "save",
    "attention_heatmap",
    "head_grid",
    "training_dynamics",
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


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Temporarily apply the book's style."""
    with mpl.rc_context(RC):
        yield


def apply_style() -> None:
    """Apply the book's style for the rest of the session (a notebook's first cell)."""
    mpl.rcParams.update(RC)


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
    shown = np.ma.masked_where(np.triu(np.ones_like(w, dtype=bool), k=1 + w.shape[1] - w.shape[0]), w)
    image = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest", aspect="equal")
    ax.grid(False)
    if tokens is not None:
        ax.set_xticks(range(w.shape[1]), list(tokens)[-w.shape[1]:], fontsize=8)
        ax.set_yticks(range(w.shape[0]), list(tokens)[-w.shape[0]:], fontsize=8)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if title:
        ax.set_title(title)
    if annotate:
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                if not np.ma.is_masked(shown[i, j]):
                    ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if vmax and w[i, j] > 0.6 * vmax else "black")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return image


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
    (lists of dicts or DataFrames as written by :func:`spartan_core.train.train`): expected edge fraction and
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
