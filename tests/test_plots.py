"""spartan_core.plots: each figure takes arrays or frames and returns a figure in the book's style, and studies never
draw."""

import ast
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

import spartan_core  # noqa: E402
from spartan_core import plots  # noqa: E402


def test_attention_graphs_draw_one_line_per_causal_edge_above_the_threshold():
    maps = torch.zeros(1, 2, 3, 5, 5)
    maps[0, 0, 0, 4, 1] = 0.9
    maps[0, 1, 2, 3, 3] = 0.03
    maps[0, 1, 1, 2, 0] = 0.01  # below the threshold
    maps[0, 0, 1, 1, 3] = 0.9  # acausal: never drawn
    fig = plots.attention_graphs({"dense": maps}, ["abcde"], ["none"], min_weight=0.02)
    lines = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]
    assert sum(len(c.get_segments()) for c in lines) == 2
    with pytest.raises(ValueError, match="^maps: "):
        plots.attention_graphs({"dense": maps[0]}, ["abcde"], ["none"], min_weight=0.02)
    plt.close(fig)


def test_score_grids_probe_maps_and_carry_bars_return_figures():
    scores = torch.rand(2, 3)
    fig = plots.induction_score_grids({"dense": scores, "sparse": scores / 2}, 0.3)
    assert len(fig.axes) == 3  # two panels and the colour bar
    fig = plots.probe_map_grid(torch.rand(2, 2, 4, 4), [(0, 1), (1, 2)], "probe")
    assert fig.axes[1].get_title() == "a1.h2"
    per_class = pd.DataFrame({"sparse_kept": [0.1, 1.0], "sparse_weight": [0.1, 0.5], "dense_weight": [0.2, 0.2]},
                             index=["none", "units"])
    fig = plots.carry_edge_bars(per_class, "edge")
    assert len(fig.axes[0].patches) == 6
    plt.close("all")


def test_kept_by_layer_blanks_what_is_missing_and_what_keeps_nothing():
    per_layer = pd.DataFrame({"small": [2.0, 0.5, np.nan], "large": [80.0, 0.0, 40.0]},
                             index=pd.Index([0, 1, 2], name="layer"))
    fig = plots.kept_by_layer(per_layer, title="kept")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 4 and "80" in texts  # a missing layer and a layer keeping nothing are blank
    with pytest.raises(ValueError, match="^percent: no layer keeps any edge"):
        plots.kept_by_layer(per_layer * 0)
    plt.close("all")


def test_selectivity_maps_share_one_diverging_scale():
    table = pd.DataFrame([[0.5, -0.25]], index=["s2 → s1"], columns=["a1", "a0"])
    fig = plots.selectivity_maps({"sparse": table, "dense": table * 0})
    assert len(fig.axes) == 3  # two maps, one shared colour bar
    assert [fig.axes[0].collections[0].get_clim(), fig.axes[1].collections[0].get_clim()] == [(-1.0, 1.0)] * 2
    assert [t.get_text() for t in fig.axes[0].texts] == ["0.50", "-0.25"]
    plt.close("all")


def _imported(node, package: str) -> list[str]:
    """Every module an import statement of a module of ``package`` names, relative imports resolved."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    parts = package.split(".")
    base = ".".join(filter(None, [*parts[:len(parts) + 1 - node.level], node.module])) if node.level else node.module
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def test_seed_spread_draws_each_seed_and_the_axis_it_is_given():
    frame = pd.DataFrame({"seed": [0, 1, 2], "dense_heads": [3, 4, 4], "sparse_heads": [1, 2, 1]})
    fig = plots.seed_spread(frame, ["dense_heads", "sparse_heads"],
                            plots.SpreadAxis("heads", "counts", integer=True, reference=2.5, reference_label="cut"))
    ax = fig.axes[0]
    assert ax.get_ylabel() == "heads" and ax.get_title() == "counts" and ax.get_ylim() == (-0.5, 4.5)
    assert [line.get_ydata()[0] for line in ax.get_lines()] == [2.5] and ax.get_legend() is not None
    assert sum(len(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets")) >= 6
    plt.close(fig)


def test_only_plots_draws_and_studies_never_import_plots():
    """Every figure lives in ``spartan_core.plots`` and draws what a study returns: a study that drew could not be
    measured without drawing, and a figure module elsewhere would be a second place for figures."""
    library = Path(spartan_core.__file__).parent
    offenders = []
    for path in sorted(library.rglob("*.py")):
        if path.parent.name == "plots":
            continue
        package = ".".join(("spartan_core", *path.relative_to(library).parent.parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                    name.split(".")[0] in ("matplotlib", "seaborn")
                    or (package.startswith("spartan_core.studies") and name.startswith("spartan_core.plots"))
                    for name in _imported(node, package)):
                offenders.append(f"{path.relative_to(library)}:{node.lineno}")
    assert not offenders, f"drawing outside spartan_core.plots at {', '.join(offenders)}"


def test_figures_are_saved_numbered_captioned_and_closed(tmp_path):
    from companion.results import ResultsDir

    results = ResultsDir("tiny", "05_fake", {}, root=tmp_path)
    figures = plots.Figures(5, results)
    for name in ("first", "second"):
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.plot([0, 1], [0, 1])
        assert figures.show(fig, name, f"the {name} line, `x` against   y.") is None, "a cell shows it once"
        assert not plt.fignum_exists(fig.number), "a shown figure is closed (no second copy from the backend)"
    shown = figures.shown
    assert [s.label for s in shown] == ["Figure 5.1", "Figure 5.2"]
    page = shown[1]._repr_html_()
    assert page.startswith('<figure class="captioned-figure"><img src="data:image/png;base64,')
    assert page.endswith("<figcaption><strong>Figure 5.2.</strong> the second line, <code>x</code> against y."
                         "</figcaption></figure>")
    assert 'alt="Figure 5.2. the second line, `x` against y."' in page
    assert (results.staging_path / "second.png").read_bytes()[:4] == b"\x89PNG"
    width = Image.open(io.BytesIO(shown[0].png)).width
    assert 300 <= width <= 400, "shown at the display dpi: 4 inches less the trimmed margin (at 120 dpi: ~450 px)"
    with pytest.raises(ValueError, match="^caption: figure 'third' needs a caption"):
        figures.show(plt.figure(), "third", " ")
