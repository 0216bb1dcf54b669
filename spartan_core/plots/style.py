"""The book's one figure style, shared by every figure: seaborn's theme in the book's fonts, sizes and colours.

Dense models are always drawn in ``DENSE`` (grey-blue) and sparse ones in ``SPARSE`` (orange), constraint targets
as dashed ``TARGET`` lines; ``SEQUENCE`` colours everything else in order. ``apply_style()`` (once per notebook)
sets the theme; ``save(fig, results, name)`` writes a figure through the results writer, so every PNG in
``results/`` has provenance.
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import seaborn as sns

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
