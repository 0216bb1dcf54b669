"""Every figure of the book, in its one style: notebooks call ``plots.<name>``.

The rule: every figure lives in ``spartan_core.plots`` and draws data a study returns; studies never import
matplotlib. Each function takes arrays or frames and returns a figure, so a study's numbers can be tested without
drawing and a figure without training.

- :mod:`.style`: the one style (``apply_style``, the ``DENSE``/``SPARSE`` colours), ``save``, which writes a
  figure through the results writer, and ``Figures``, which also shows it numbered and captioned;
- :mod:`.maps`: the gate and attention maps, per-head and per-layer tables as heatmaps;
- :mod:`.seeds`: results over training seeds (dots with mean and min-max, curves with min-max bands);
- :mod:`.circuits`: Figure-1 attention graphs, component circuits, circuit size;
- :mod:`.baselines`: fixed mask policies against the learned gate, and the multiplier's controllers.
"""

from .baselines import controller_traces, pareto_panels
from .circuits import (
    attention_graphs,
    carry_edge_bars,
    circuit_curves,
    circuit_pair,
    draw_circuit,
    edges_drawn,
    ratio_draws,
)
from .maps import (
    attention_panels,
    head_grid,
    induction_score_grids,
    keep_frequency,
    kept_by_head,
    kept_by_layer,
    probe_map_grid,
    selectivity_maps,
    weight_sums,
)
from .seeds import (SpreadAxis, edges_vs_loss_over_seeds, penalty_tradeoff_over_seeds, seed_spread,
                    training_dynamics_over_seeds)
from .style import DENSE, SPARSE, CaptionedFigure, Figures, apply_style, save

__all__ = [
    "DENSE", "SPARSE", "apply_style", "save", "Figures", "CaptionedFigure",
    "attention_panels", "weight_sums", "keep_frequency", "head_grid", "probe_map_grid", "induction_score_grids",
    "kept_by_head", "kept_by_layer", "selectivity_maps",
    "seed_spread", "SpreadAxis", "training_dynamics_over_seeds", "penalty_tradeoff_over_seeds", "edges_vs_loss_over_seeds",
    "attention_graphs", "edges_drawn", "carry_edge_bars", "circuit_pair", "circuit_curves", "draw_circuit",
    "ratio_draws",
    "pareto_panels", "controller_traces",
]
