"""The book's one figure style, shared by every figure: seaborn's theme in the book's fonts, sizes and colours.

Dense models are always drawn in ``DENSE`` (grey-blue) and sparse ones in ``SPARSE`` (orange), constraint targets
as dashed ``TARGET`` lines; ``SEQUENCE`` colours everything else in order. ``apply_style()`` (once per notebook)
sets the theme; ``save(fig, results, name)`` writes a figure through the results writer, so every PNG in
``results/`` has provenance; a chapter shows its figures through :class:`Figures`, which numbers and captions them.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from typing import Any

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


TABLE_PRECISION = 4  # decimals a shown table prints (its results file keeps every digit)


def apply_style() -> None:
    """Apply the book's style for the rest of the session (a notebook's first cell): seaborn's white-grid theme
    in the book's palette, with the book's sizes on top, and tables shown to ``TABLE_PRECISION`` decimals."""
    import pandas as pd

    sns.set_theme(context="notebook", style="whitegrid", palette=list(SEQUENCE), rc=RC)
    pd.set_option("display.precision", TABLE_PRECISION)


DISPLAY_DPI = 100  # a shown figure's natural width in pixels is its width in inches times this


@dataclass(frozen=True)
class CaptionedFigure:
    """A figure as a reader sees it: the PNG with its number and caption below, as one HTML ``<figure>`` (Jupyter
    and the book render it alike; the caption is also the image's alt text)."""

    png: bytes
    label: str
    caption: str

    def _repr_html_(self) -> str:
        caption = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(self.caption, quote=False))
        data = base64.b64encode(self.png).decode("ascii")
        return (f'<figure class="captioned-figure"><img src="data:image/png;base64,{data}" '
                f'alt="{html.escape(f"{self.label}. {self.caption}")}" style="max-width: 100%">'
                f"<figcaption><strong>{self.label}.</strong> {caption}</figcaption></figure>")

    def __repr__(self) -> str:
        return f"{self.label}. {self.caption}"


@dataclass
class Figures:
    """A chapter's figures, numbered in the order shown: :meth:`show` writes a figure through the results writer
    (as :func:`save`), displays it as "Figure <chapter>.<n>" with its caption, and closes it."""

    chapter: int
    results: Any
    shown: list[CaptionedFigure] = field(default_factory=list)

    def show(self, fig, name: str, caption: str) -> None:
        """Save ``fig`` as ``<results>/<name>.png``, then show it with ``caption`` (what to see in it); nothing is
        returned, so a cell that ends with this call shows the figure once."""
        import matplotlib.pyplot as plt
        from IPython.display import display

        if not caption.strip():
            raise ValueError(f"caption: figure {name!r} needs a caption that says what to see")
        save(fig, self.results, name)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DISPLAY_DPI, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        shown = CaptionedFigure(buffer.getvalue(), f"Figure {self.chapter}.{len(self.shown) + 1}",
                                " ".join(caption.split()))
        self.shown.append(shown)
        display(shown)


def save(fig, results, name: str) -> None:
    """Write ``fig`` as ``<results>/<name>.png`` through the one results writer (the companion's ``ResultsDir``,
    passed in: the library never imports the companion)."""
    results.figure(fig, name)


def to_numpy(x) -> np.ndarray:
    """A float numpy array from a torch tensor (any device/dtype) or array-like."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)
