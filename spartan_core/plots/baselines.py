"""Chapter 7's baselines: fixed mask policies against the learned gate (a Pareto front per metric) and the
multiplier's controllers over training."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import seaborn as sns

from ..formatting import SETTING
from .style import DENSE, SEQUENCE, SPARSE, TARGET


def _policy_colours(policies: Sequence[str]) -> dict:
    """One colour per fixed policy, never the learned gate's (``SPARSE``) or the dense model's."""
    palette = [c for c in SEQUENCE if c not in (SPARSE, DENSE)]
    return {policy: palette[i % len(palette)] for i, policy in enumerate(policies)}


def pareto_panels(points, *, dense_ce: float, dense_exact_match: float | None, title: str,
                  control_ce: float | None = None, control_exact_match: float | None = None):
    """Held-out CE (and exact match, where measured) against kept keys per query, log x: each fixed policy a curve
    over its budgets, fine-tuned solid and as-is dashed; the learned gate a star; the dense checkpoint dotted and its
    compute-matched control (the gate's steps, no gate) dash-dotted. ``points`` is
    :meth:`~spartan_core.studies.baselines.Pareto.frame`."""
    import pandas as pd
    from matplotlib.ticker import FuncFormatter, NullFormatter

    points = pd.DataFrame(points)
    metrics = [("heldout_ce", "held-out CE (nats)", dense_ce, control_ce)]
    if dense_exact_match is not None and points["exact_match"].notna().all():
        metrics.append(("exact_match", "held-out exact match", dense_exact_match, control_exact_match))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(7.4, 3.6 * len(metrics)), squeeze=False,
                             constrained_layout=True)
    axes = axes.T
    fixed = points[points["stage"] != "learned"]
    colours = _policy_colours(list(dict.fromkeys(fixed["policy"])))
    learned = points[points["stage"] == "learned"]
    for ax, (column, label, dense, control) in zip(axes[0], metrics):
        for policy, colour in colours.items():
            for stage, style in (("fine-tuned", "-o"), ("as is", "--x")):
                curve = fixed[(fixed["policy"] == policy) & (fixed["stage"] == stage)].sort_values("kept_per_query")
                ax.plot(curve["kept_per_query"], curve[column], style, color=colour, ms=4,
                        lw=1.4 if stage == "fine-tuned" else 0.8, alpha=1.0 if stage == "fine-tuned" else 0.6,
                        label=f"{policy}, {stage}")
        ax.plot(learned["kept_per_query"], learned[column], "*", color=SPARSE, ms=16, mec="black", mew=0.6,
                label="learned gate (SPARTAN)")
        ax.axhline(dense, color=DENSE, ls=":", lw=1.2, label="dense checkpoint")
        if control is not None:
            ax.axhline(control, color=DENSE, ls="-.", lw=1.2, label="dense control (the gate's steps)")
        values = points[column].dropna()
        if column == "heldout_ce" and values.min() > 0 and values.max() / values.min() > 100:
            ax.set_yscale("log")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: SETTING(value)))
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
    palette = {label: SEQUENCE[i % len(SEQUENCE)] for i, label in enumerate(labels)}
    seeds = evals["seed"].nunique()
    fig, grid = plt.subplots(2, 2, figsize=(9.0, 6.6), constrained_layout=True)
    axes = [grid[0, 0], grid[0, 1], grid[1, 0]]
    grid[1, 1].remove()
    panels = ((axes[0], evals, "eval_kept_per_query", "kept keys per query (eval)"),
              (axes[1], evals, "eval_ce", "CE (eval, training data)"),
              (axes[2], history, "beta", "β"))
    for ax, frame, column, ylabel in panels:
        sns.lineplot(frame, x="step", y=column, hue="label", hue_order=labels, palette=palette, errorbar=("pi", 100),
                     lw=1.2, ax=ax, legend=ax is axes[1])
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
    axes[1].axhline(tau, color=TARGET, ls="--", lw=1, label="τ")
    axes[1].legend(fontsize=8, title=f"mean over {seeds} seeds, band min–max" if seeds > 1 else None,
                   title_fontsize=8)
    fig.suptitle(title, fontsize=11)
    return fig
