"""The book's addition explorer: every attention edge of the dense and the sparse toy on a set of problems, and
the heads of each model's circuit at 90 % explained effect, exported as data that a small script shipped with
the book (``book/_static/explorer.js``) draws. Nothing is fetched: the data sits in the page itself, so the
explorer works from a file on disk as well as from a server."""

from __future__ import annotations

import html
import json
import random
from dataclasses import dataclass
from typing import Sequence

from .addition_algorithm import example_graphs, parse_problem
from .common import ModelPair

__all__ = ["AdditionExplorer", "addition_explorer"]


@dataclass
class AdditionExplorer:
    """Problems with their edges (``[layer, head, query, key, weight]``, weights ≥ ``min_weight``, causal) for
    both models, which of them the paper shows, and the circuit heads (``"L1H2"``) of each model."""

    problems: list[dict]
    circuit: dict[str, list[str]]
    threshold: float
    layers: int
    heads: int
    min_weight: float
    seed: int

    def to_dict(self) -> dict:
        return {"problems": self.problems, "circuit": self.circuit, "threshold": self.threshold,
                "layers": self.layers, "heads": self.heads, "min_weight": self.min_weight, "seed": self.seed}

    def to_html(self) -> str:
        """The explorer's container and its data (a JSON script element the explorer script reads)."""
        data = html.escape(json.dumps(self.to_dict(), separators=(",", ":")), quote=False)
        return (f'<div class="addition-explorer" data-explorer="addition">'
                f'<script type="application/json" class="explorer-data">{data}</script>'
                f'<noscript>The explorer needs JavaScript.</noscript></div>')

    def edges_drawn(self):
        """Edges drawn per problem and model (the results table behind the page's data)."""
        import pandas as pd

        return pd.DataFrame([{"problem": p["text"], "carry": p["carry"], "paper": p["paper"],
                              "dense": len(p["dense"]), "sparse": len(p["sparse"])} for p in self.problems])

    def claim_summary(self) -> str:
        """The paper's Figure-1 claim as this page measures it: how diffuse each model's drawing is."""
        drawn = self.edges_drawn()
        return (f"seed {self.seed}, {len(drawn)} problems: the dense toy draws {drawn['dense'].min()}–"
                f"{drawn['dense'].max()} edges per problem at weight ≥ {self.min_weight:g}, the sparse toy "
                f"{drawn['sparse'].min()}–{drawn['sparse'].max()}")

    @property
    def sentence(self) -> str:
        sizes = {label: len(heads) for label, heads in self.circuit.items()}
        paper = sum(p["paper"] for p in self.problems)
        return (f"{len(self.problems)} problems (the paper's {paper} first); edges drawn at weight ≥ "
                f"{self.min_weight:g}; circuit at {self.threshold:.0%} explained effect: "
                f"{sizes.get('dense', 0)} dense heads, {sizes.get('sparse', 0)} sparse heads.")


def _edges(maps, problem: int, min_weight: float) -> list[list]:
    found = (maps[problem].tril() >= min_weight).nonzero().tolist()
    return [[layer, head, query, key, round(float(maps[problem, layer, head, query, key]), 3)]
            for layer, head, query, key in found]


def _head_label(name: str) -> str:
    layer, head = name.removeprefix("a").split(".h")
    return f"L{layer}H{head}"


def addition_explorer(pair: ModelPair, *, examples: Sequence[str], n_problems: int, min_weight: float,
                      circuit_problems: int, circuit_method: str, seed: int, threshold: float = 0.9,
                      draw_seed: int = 0) -> AdditionExplorer:
    """The explorer's data: the paper's ``examples`` then ``n_problems`` problems drawn with ``draw_seed``."""
    from ..circuits import ComponentGraph, addition_task, attribute
    from ..circuits.size import circuit_heads

    rng = random.Random(draw_seed)
    paper = [parse_problem(t) for t in examples]
    chosen = list(dict.fromkeys(paper + [(rng.randrange(100), rng.randrange(100)) for _ in range(n_problems)]))
    graphs = example_graphs(pair, [f"{a}+{b}" for a, b in chosen], min_weight)
    problems = [{"text": text, "carry": carry, "paper": problem in paper,
                 "dense": _edges(graphs.dense, i, min_weight), "sparse": _edges(graphs.sparse, i, min_weight)}
                for i, (problem, text, carry) in enumerate(zip(chosen, graphs.texts, graphs.carries))]
    task = addition_task(n=circuit_problems, seed=0)
    circuit = {}
    for label, loaded in (("dense", pair.dense), ("sparse", pair.sparse)):
        graph = ComponentGraph(loaded.model)
        circuit[label] = [_head_label(h) for h in circuit_heads(graph, task, attribute(graph, task, circuit_method),
                                                                threshold)]
    _, layers, heads, _, _ = graphs.dense.shape
    return AdditionExplorer(problems, circuit, threshold, layers, heads, min_weight, seed)
