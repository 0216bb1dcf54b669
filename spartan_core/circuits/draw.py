"""Drawing a circuit: nodes by layer, kept edges coloured by the input they feed (q, k, v, MLP, logits)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyArrowPatch

from .patching import EdgeScores

__all__ = ["draw_circuit"]

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
