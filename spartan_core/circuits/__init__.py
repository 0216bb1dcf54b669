"""Circuit discovery: component graph, activation patching, EAP / EAP-IG, explained-effect curves, tasks.

Typical use::

    graph = ComponentGraph(model)                       # nodes emb, a{l}.h{h} (.q/.k/.v), m{l}, logits
    task = addition_task(64)                            # clean/corrupted pairs + metric
    scores = attribute(graph, task, "eap-ig")           # or "eap", "exact"; ablation="resample" | "mean"
    size = circuit_size(graph, task, scores)            # curves and edges/heads needed for 80/90/95 %
    fig = plots.draw_circuit(scores, size["edges"][0.9], n_layers=graph.n_layers, n_heads=graph.n_heads)
"""

from .graph import EMBEDDING, LOGITS, ComponentGraph, RunState
from .heads import effective_heads, head_ablation_effects, heads_above
from .patching import (
    ABLATIONS,
    METHODS,
    EdgeScores,
    attribute,
    corrupt_outputs,
    evaluate_ablations,
    exact_edge_scores,
    graph_of,
    rank_agreement,
    spearman,
)
from .size import (
    THRESHOLDS,
    SizeSettings,
    circuit_size,
    explained_effect,
    linear_grid,
    log_grid,
    size_ratios,
    size_study,
)
from .tasks import (
    CircuitTask,
    addition_task,
    answer_logprob,
    beats_distractors,
    clean_performance,
    distractor_logit_difference,
    docstring_task,
    greater_than_task,
    induction_task,
    ioi_task,
    logit_difference,
    probability_difference,
    single_token_names,
    single_token_words,
)

__all__ = [
    "ComponentGraph", "RunState", "EMBEDDING", "LOGITS", "head_ablation_effects", "effective_heads", "heads_above",
    "ABLATIONS", "METHODS", "EdgeScores", "attribute", "corrupt_outputs", "evaluate_ablations",
    "exact_edge_scores", "graph_of", "rank_agreement", "spearman",
    "THRESHOLDS", "SizeSettings", "circuit_size", "explained_effect", "log_grid", "linear_grid", "size_study", "size_ratios",
    "CircuitTask", "addition_task", "induction_task", "ioi_task", "greater_than_task", "answer_logprob",
    "logit_difference", "probability_difference", "single_token_words", "docstring_task", "single_token_names",
    "distractor_logit_difference", "beats_distractors", "clean_performance",
]
