"""The book's addition explorer: every attention edge of the dense and the sparse toy on a set of problems and
each model's circuit heads, exported into the page itself for the book's script (``book/_static/explorer.js``) to
draw. Nothing is fetched, so the explorer works from a file on disk as well as from a server."""

from __future__ import annotations

import html
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd

from ..claims import Claim
from ..formatting import PERCENT_WHOLE, SIGNIFICANT
from .addition_algorithm import example_graphs, parse_problem
from .common import ModelPair

__all__ = ["AdditionExplorer", "addition_explorer", "explorer_claim"]

CIRCUIT_THRESHOLD = 0.9  # the explained effect at which each model's circuit heads are marked
DRAW_SEED = 0  # the random problems after the paper's: the same on every run


@dataclass
class AdditionExplorer:
    """Problems with their edges (``[layer, head, query, key, weight]``, weights ≥ ``min_weight``, causal) for
    both models, which of them the paper shows, and the circuit heads (``"a1.h2"``) of each model."""

    problems: list[dict]
    circuit: dict[str, list[str]]
    threshold: float
    layers: int
    heads: int
    min_weight: float
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)

    def to_html(self) -> str:
        """The explorer's container and its data (a JSON script element the explorer script reads)."""
        data = html.escape(json.dumps(self.to_dict(), separators=(",", ":")), quote=False)
        return (f'<div class="addition-explorer" data-explorer="addition">'
                f'<script type="application/json" class="explorer-data">{data}</script>'
                f'<noscript>The explorer needs JavaScript.</noscript></div>')

    def edges_drawn(self) -> pd.DataFrame:
        """Edges drawn per problem and model (the results table behind the page's data)."""
        return pd.DataFrame([{"problem": p["text"], "carry": p["carry"], "paper": p["paper"],
                              "dense": len(p["dense"]), "sparse": len(p["sparse"])} for p in self.problems])


def explorer_claim(explorer: AdditionExplorer) -> Claim:
    """What the export holds, as evidence for the paper's Figure-1 claim (chapter 5 judges it): how diffuse each
    model's drawing is, and how many heads each model's circuit needs."""
    drawn, sizes = explorer.edges_drawn(), {label: len(heads) for label, heads in explorer.circuit.items()}
    sentence = (f"seed {explorer.seed}, {len(drawn)} problems (the paper's {drawn['paper'].sum()} first): the dense "
                f"toy draws {drawn['dense'].min()}–{drawn['dense'].max()} edges per problem at weight ≥ "
                f"{SIGNIFICANT(explorer.min_weight)}, the sparse toy {drawn['sparse'].min()}–"
                f"{drawn['sparse'].max()}; circuit at {PERCENT_WHOLE(explorer.threshold)} explained effect: "
                f"{sizes.get('dense', 0)} dense heads, {sizes.get('sparse', 0)} sparse heads.")
    return Claim("addition_circuit", sentence, {"problems": len(explorer.problems), "circuit_heads": explorer.circuit})


def _edges(maps, problem: int, min_weight: float) -> list[list]:
    found = (maps[problem].tril() >= min_weight).nonzero().tolist()
    return [[layer, head, query, key, round(float(maps[problem, layer, head, query, key]), 3)]
            for layer, head, query, key in found]


def addition_explorer(pair: ModelPair, *, examples: Sequence[str], n_problems: int, min_weight: float,
                      circuit_problems: int, circuit_method: str, seed: int) -> AdditionExplorer:
    """The explorer's data for seed ``seed``'s pair: the paper's ``examples`` then ``n_problems`` random problems;
    circuit heads named by the component graph, as ``common.head_name`` writes them (``a1.h2``)."""
    from ..circuits import ComponentGraph, addition_task, attribute
    from ..circuits.size import circuit_heads

    rng = random.Random(DRAW_SEED)
    paper = [parse_problem(t) for t in examples]
    chosen = list(dict.fromkeys(paper + [(rng.randrange(100), rng.randrange(100)) for _ in range(n_problems)]))
    graphs = example_graphs(pair, [f"{a}+{b}" for a, b in chosen], min_weight)
    problems = [{"text": text, "carry": carry, "paper": problem in paper,
                 "dense": _edges(graphs.dense, i, min_weight), "sparse": _edges(graphs.sparse, i, min_weight)}
                for i, (problem, text, carry) in enumerate(zip(chosen, graphs.texts, graphs.carries))]
    task, circuit = addition_task(n=circuit_problems, seed=0), {}
    for label, loaded in (("dense", pair.dense), ("sparse", pair.sparse)):
        graph = ComponentGraph(loaded.model)
        circuit[label] = circuit_heads(graph, task, attribute(graph, task, circuit_method), CIRCUIT_THRESHOLD)
    _, layers, heads, _, _ = graphs.dense.shape
    return AdditionExplorer(problems, circuit, CIRCUIT_THRESHOLD, layers, heads, min_weight, seed)
