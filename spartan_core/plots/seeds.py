"""Results over training seeds: one measurement per seed as dots with mean and min-max, and chapter 2's and 3's
curves and trade-offs, each seed's run small and the mean over seeds with its min-max large."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from ..formatting import DECIMAL2, counted
from .style import DENSE, SEQUENCE, SPARSE, TARGET


@dataclass(frozen=True)
class SpreadAxis:
    """The value axis of :func:`seed_spread`: its label, the panel's title (None: says how to read the dots),
    limits, whole-number ticks from zero for counts (``integer``), and a dashed ``reference`` line (a threshold, a
    target) with its legend label."""

    ylabel: str = ""
    title: str | None = None
    ylim: tuple[float | None, float | None] | None = None
    integer: bool = False
    reference: float | None = None
    reference_label: str | None = None


def seed_spread(frame, columns, axis: SpreadAxis = SpreadAxis(), *, labels=None, colours=None, seed: str = "seed",
                ax=None):
    """One measurement per column of ``frame`` (one row per training seed): each seed's value as a dot (marked
    with its seed when there are at most six), the mean as a short horizontal bar and the min-max as a vertical
    line, on ``axis``. Columns with "dense"/"sparse" in their name take the book's dense/sparse colours.
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
    if axis.reference is not None:
        ax.axhline(axis.reference, color=TARGET, linestyle="--", linewidth=0.9, label=axis.reference_label)
        if axis.reference_label:
            ax.legend(loc="best", fontsize=8)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(labels)
    ax.set_xlim(-0.6, len(columns) - 0.4)
    if axis.integer:
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        top = max(float(frame[c].max()) for c in columns)
        ax.set_ylim(-0.5, top + 0.5)
    if axis.ylim is not None:
        ax.set_ylim(*axis.ylim)
    ax.set_ylabel(axis.ylabel)
    ax.set_title(axis.title or f"{len(frame)} training seeds: each dot one seed, bar the mean, line the min-max",
                 fontsize=10)
    return fig


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
    """The paper's training-dynamics figure over training seeds, from post-training runs' per-step ``history`` and
    ``evals`` (as logged by :func:`spartan_core.training.post_train`, with a ``seed`` column; a phase with beta
    held down, ``phase == "floor"``, is shaded). Each panel is a seaborn line plot of the mean over seeds with a
    band over their min-max (expected edge fraction, beta, the training-CE EMA, the evaluation CE); the
    evaluations' kept fraction is one dot per seed in the seed's colour, and each seed's kept checkpoint a dotted
    line in it. ``tau`` and ``best_step``: one value or a mapping seed -> value; one shared tau is a single dashed
    line, per-seed taus dashed in the seed's colour."""
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
    fig.legend(handles=style_handles + seed_handles, loc="outside lower center", ncols=2, fontsize=8)
    axes[0].set_ylabel("edge fraction")
    axes[1].set_ylabel("GECO multiplier β")
    axes[2].set_ylabel("training CE EMA (nats)")
    tau_label = "target τ" if shared_tau else "target τ (each seed's, in its colour)"
    axes[2].legend(handles=[Line2D([], [], color=TARGET, ls="--", lw=1, label=tau_label)], loc="lower left")
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
    """Kept edges against held-out CE (log-log) of GECO and fixed penalties over training seeds: each seed's run as
    a small marker (GECO a star, each fixed beta its own colour) and the mean over seeds as a large one with min-max
    error bars on both axes; the fixed betas' means are joined. ``runs`` has the columns ``run``, ``method``,
    ``beta``, ``seed``, ``kept_fraction`` and ``heldout_ce``; ``dense_ce`` and ``tau`` are one value or one per
    seed (a band)."""
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
    ax.set_title(f"{counted(seeds, 'training seed')}: small markers one seed each", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def edges_vs_loss_over_seeds(rows, *, paper_keys_per_query: tuple[float, float]):
    """Top: kept keys per query (comparable across context lengths) against the CE change in nats of each model's
    untrained gate (hollow, against the dense checkpoint) and sparse model (star, against its compute-matched
    control), beside the paper's band; each seed's as small markers, their mean over seeds as large ones with
    min-max error bars. Bottom: mean kept keys per query with min-max error bars and one dot per seed. ``rows`` (one
    per model and training seed) has the columns ``model``, ``context_length``, ``gated_kept_per_query``,
    ``gated_ce_change`` and, for post-trained models, the same with ``sparse_``."""
    import pandas as pd

    rows = pd.DataFrame(rows).reset_index(drop=True)
    for column in ("sparse_kept_per_query", "sparse_ce_change", "gated_ce_change"):
        if column not in rows:
            rows[column] = np.nan
    models = list(dict.fromkeys(rows["model"].tolist()))
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(7.2, 7.8), constrained_layout=True)
    low, high = paper_keys_per_query
    paper = f"paper, reported: {DECIMAL2(low)}–{DECIMAL2(high)} keys per query at no loss increase"
    ax.axvspan(low, high, color=TARGET, alpha=0.12, lw=0, label=paper)
    bx.axhspan(low, high, color=TARGET, alpha=0.12, lw=0)
    ax.axhline(0.0, color=TARGET, ls="--", lw=1)
    for index, model in enumerate(models):
        group, colour = rows[rows["model"] == model], SEQUENCE[(index + 2) % len(SEQUENCE)]
        seeds = len(group)
        over = f", mean of {seeds} seeds" if seeds > 1 else ""
        for kind, marker, hollow, label in (("gated", "o", True, "untrained gate"),
                                            ("sparse", "*", False, "sparse post-trained")):
            part = group[np.isfinite(group[f"{kind}_kept_per_query"].astype(float))
                         & np.isfinite(group[f"{kind}_ce_change"].astype(float))]
            if part.empty:
                continue
            xs, ys = part[f"{kind}_kept_per_query"].astype(float), part[f"{kind}_ce_change"].astype(float)
            face = "none" if hollow else colour
            if seeds > 1:
                ax.scatter(xs, ys, s=25, marker=marker, facecolors=face, edgecolors=colour, alpha=0.5,
                           linewidths=1.0)
            x, xerr = _min_max_errors(xs)
            y, yerr = _min_max_errors(ys)
            ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt=marker, ms=10 if hollow else 13, mfc=face,
                        mec=colour, color=colour, capsize=3, lw=1, label=f"{model}: {label}{over}")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=0.01)
    ax.margins(x=0.15, y=0.15)
    ax.set_xlabel("kept keys per query (held-out data)")
    ax.set_ylabel("CE change (nats): gate vs dense,\nsparse vs its control")
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
