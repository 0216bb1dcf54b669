"""Chapter 5's question: on the paper's addition toy, do the sparse model's heads read the matching digits, and
is carry information read only when a carry is needed (Figure 1, then all held-out problems; the layer-0 reads are
:mod:`.addition_reads`, the carry part :mod:`.addition_carry`)? Every training seed is measured alike into one
:class:`Seeds` of :class:`AdditionSeed`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from ..claims import Claim
from ..data import addition
from ..formatting import DECIMAL1, DECIMAL2, PERCENT, PERCENT1, PERCENT_WHOLE, SIGNIFICANT, counted
from ..mechanism.attention import attention_maps
from .addition_carry import CARRY_SELECTIVITY, POSITION_NAMES, CarryStudy, carry_study, class_means
from .addition_reads import MATCHING_READ_SHARE, LayerReads, layer_reads
from .common import ModelPair, head_name
from .seeds import Seeds, spread_table

__all__ = ["POSITION_NAMES", "parse_problem", "ToyAccuracy", "toy_accuracy", "ExampleGraphs", "example_graphs",
           "ToyCircuit", "toy_circuit", "AdditionSettings", "AdditionSeed", "addition_seed", "addition_seeds",
           "exact_match_table", "exact_match_spread", "carry_table", "circuit_table", "accuracy_sentence",
           "graphs_sentence", "carry_sentence", "circuit_sentence", "addition_metrics", "ADDITION_RULE",
           "addition_claim"]


def parse_problem(text: str) -> tuple[int, int]:
    """``"53+21"`` -> ``(53, 21)``: two operands 0..99 joined by ``+``; anything else is refused."""
    parts = str(text).strip().split("+")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) <= 99 for p in parts):
        raise ValueError(f"examples: expected problems like '53+21' with operands 0..99, got {text!r}")
    return int(parts[0]), int(parts[1])


@dataclass(frozen=True)
class ToyAccuracy:
    """Held-out exact match (overall and per carry class, with counts) of the dense toy and its sparse copy, and the
    sparse copy's kept edges."""

    dense_exact_match: dict
    sparse_exact_match: dict
    dense_heldout_ce: float
    sparse_heldout_ce: float
    kept_fraction: float
    kept_per_query: float
    kept_fraction_per_layer: list
    kept_per_query_per_layer: list
    tau: float
    sparse_steps: int

    def table(self) -> pd.DataFrame:
        classes = ["all", *addition.CARRY_CLASSES]
        return pd.DataFrame({"problems": [self.dense_exact_match[f"n_{c}"] for c in classes],
                             "dense_exact_match": [self.dense_exact_match[c] for c in classes],
                             "sparse_exact_match": [self.sparse_exact_match[c] for c in classes]},
                            index=pd.Index(classes, name="carry_class"))


def toy_accuracy(pair: ModelPair) -> ToyAccuracy:
    run, edges = pair.sparse.run, pair.after.edges
    return ToyAccuracy(pair.before.exact_match, pair.after.exact_match, pair.before.ce, pair.after.ce,
                       edges.kept_fraction, edges.kept_per_query, edges.per_layer, edges.kept_per_query_per_layer,
                       run.tau, run.recipe.steps)


@dataclass(frozen=True)
class ExampleGraphs:
    """Figure 1: attention of both models on a few problems (``dense``/``sparse`` [P, L, H, T, T]) and the weight
    at or above which an edge is drawn."""

    problems: list[tuple[int, int]]
    dense: torch.Tensor
    sparse: torch.Tensor
    min_weight: float

    @property
    def texts(self) -> list[str]:
        return [addition.problem_text(a, b) for a, b in self.problems]

    @property
    def carries(self) -> list[str]:
        return [addition.carry_class(a, b) for a, b in self.problems]

    def edges_drawn(self) -> pd.DataFrame:
        """Edges at or above ``min_weight`` per problem and model: what each panel of the figure draws."""
        drawn = {label: [int((maps[p].tril() >= self.min_weight).sum()) for p in range(len(self.problems))]
                 for label, maps in (("dense", self.dense), ("sparse", self.sparse))}
        return pd.DataFrame({"problem": self.texts, "carry": self.carries, **drawn})


def example_graphs(pair: ModelPair, examples: Sequence[str], min_weight: float) -> ExampleGraphs:
    problems = [parse_problem(text) for text in examples]
    ids = torch.tensor([addition.encode(addition.problem_text(a, b)) for a, b in problems])
    return ExampleGraphs(problems, attention_maps(pair.dense.model, ids), attention_maps(pair.sparse.model, ids),
                         min_weight)


@dataclass(frozen=True)
class ToyCircuit:
    """Component-edge attributions of both models on held-out problems, their top ``n_edges`` edges and the heads
    (layer, head) with an outgoing edge among them."""

    method: str
    n_edges: int
    scores: dict
    heads: dict

    def top_edges(self) -> pd.DataFrame:
        return pd.concat([s.to_frame().nsmallest(self.n_edges, "rank").assign(model=label)
                          for label, s in self.scores.items()], ignore_index=True)

    def named(self, label: str) -> str:
        return ", ".join(head_name(*h) for h in self.heads[label]) or "none"


def toy_circuit(pair: ModelPair, n_problems: int, n_edges: int, method: str) -> ToyCircuit:
    from ..circuits import ComponentGraph, addition_task, attribute

    task = addition_task(n=n_problems, seed=0)
    scores, heads = {}, {}
    for label, loaded in (("dense", pair.dense), ("sparse", pair.sparse)):
        graph = ComponentGraph(loaded.model)
        head_of = {name: divmod(i, graph.n_heads) for i, name in enumerate(graph.heads)}
        scores[label] = attribute(graph, task, method)
        top = scores[label].top_edges(n_edges)
        sources = {scores[label].edges[i][0] for i in top.nonzero(as_tuple=True)[0].tolist()}
        heads[label] = sorted(head_of[s] for s in sources if s in head_of)
    return ToyCircuit(method, n_edges, scores, heads)


# ------------------------------------------------------------------------------------------ over training seeds


@dataclass(frozen=True)
class AdditionSettings:
    """What the chapter measures on each seed: Figure 1 on ``examples`` (edges of weight ≥ ``min_weight``), the
    held-out averages in batches of ``batch_size``, and the circuit's top ``circuit_edges`` edges by
    ``circuit_method`` on ``circuit_problems`` problems (0 or None: no circuit)."""

    examples: Sequence[str]
    min_weight: float
    batch_size: int
    circuit_problems: int | None
    circuit_edges: int
    circuit_method: str


@dataclass(frozen=True)
class AdditionSeed:
    """Everything the chapter measures on one training seed's pair (dense toy and sparse copy): held-out accuracy
    and kept edges, the Figure-1 graphs, the layer-0 reads, the carry selectivity and (optionally) the circuit."""

    seed: int
    accuracy: ToyAccuracy
    graphs: ExampleGraphs
    reads: LayerReads
    carry: CarryStudy
    circuit: ToyCircuit | None
    problems: int
    n_layers: int
    n_heads: int

    def row(self) -> dict:
        """The seed's headline numbers as one flat row."""
        a, c, drawn = self.accuracy, self.carry, self.graphs.edges_drawn()
        row = {"dense_exact_match": float(a.dense_exact_match["all"]),
               "sparse_exact_match": float(a.sparse_exact_match["all"]), "dense_heldout_ce": float(a.dense_heldout_ce),
               "sparse_heldout_ce": float(a.sparse_heldout_ce), "kept_fraction": float(a.kept_fraction),
               "kept_per_query": float(a.kept_per_query),
               **{f"kept_per_query_layer{i}": float(k) for i, k in enumerate(a.kept_per_query_per_layer)},
               "dense_edges_drawn": float(drawn["dense"].mean()), "sparse_edges_drawn": float(drawn["sparse"].mean()),
               "selective": c.selective, "head": head_name(c.best.layer, c.best.head), "edge": c.best.reads,
               "carry": c.best.carry, "with_carry": c.best.with_carry, "without_carry": c.best.without_carry,
               "selectivity": c.best.selectivity, "dense_edge": c.dense_best.reads,
               "dense_selectivity": c.dense_best.selectivity, "reads_matching_digits": self.reads.reads_matching_digits,
               **{f"layer0_reads_{digit}": share for digit, share in self.reads.matching_reads.items()}}
        for kind, edge in c.best_by_carry.items():
            row.update({f"{kind}_edge": edge.reads, f"{kind}_selectivity": edge.selectivity})
        if self.circuit is not None:
            row.update({f"{label}_circuit_heads": len(heads) for label, heads in self.circuit.heads.items()})
        return row


def addition_seed(pair: ModelPair, seed: int, settings: AdditionSettings) -> AdditionSeed:
    """Measure one training seed's pair."""
    s, means = settings, class_means(pair, settings.batch_size)
    circuit = toy_circuit(pair, s.circuit_problems, s.circuit_edges, s.circuit_method) if s.circuit_problems else None
    config = pair.sparse.model.config
    return AdditionSeed(seed, toy_accuracy(pair), example_graphs(pair, s.examples, s.min_weight),
                        layer_reads(means, layer=0), carry_study(means), circuit, int(means["dense"].count.sum()),
                        config.n_layer, config.n_head)


def addition_seeds(train_seeds: Sequence[int], load: Callable[[int], ModelPair],
                   settings: AdditionSettings) -> Seeds[AdditionSeed]:
    """Load each training seed's pair with ``load(seed)`` (``common.load_pair``) and measure it; no pair is kept
    once measured."""
    return Seeds.measure(train_seeds, lambda seed: addition_seed(load(seed), seed, settings))


def _spreads(runs: Seeds[AdditionSeed]) -> dict:
    """Each headline number over the training seeds (not a per-carry edge's: a carry may have no problem)."""
    layers = len(runs.first.accuracy.kept_per_query_per_layer)
    return runs.spreads(["dense_exact_match", "sparse_exact_match", "dense_heldout_ce", "sparse_heldout_ce",
                         "kept_fraction", "kept_per_query", *[f"kept_per_query_layer{i}" for i in range(layers)],
                         "dense_edges_drawn", "sparse_edges_drawn", "with_carry", "without_carry", "selectivity",
                         "dense_selectivity", "dense_circuit_heads", "sparse_circuit_heads"])


def _selective(runs: Seeds[AdditionSeed]) -> list[int]:
    """Seeds whose sparse model has a carry-selective kept edge (:attr:`CarryStudy.selective`)."""
    return runs.where(lambda run: run.carry.selective)


def exact_match_table(runs: Seeds[AdditionSeed]) -> pd.DataFrame:
    """Held-out exact match per seed and carry class."""
    return runs.stacked(lambda run: run.accuracy.table().reset_index())


def exact_match_spread(runs: Seeds[AdditionSeed]) -> pd.DataFrame:
    """Per carry class: mean, min and max over seeds of both models' exact match, and n (seeds)."""
    return spread_table(exact_match_table(runs), "carry_class", ["dense_exact_match", "sparse_exact_match"])


def carry_table(runs: Seeds[AdditionSeed]) -> pd.DataFrame:
    """Per seed: the most carry-selective kept edge (which head, which edge, which carry), its kept share with and
    without the carry, whether it is selective at all, and the dense model's most selective edge."""
    frame = runs.per_seed()
    extra = [c for c in frame.columns if c.endswith(("units_edge", "units_selectivity", "tens_edge",
                                                     "tens_selectivity"))]
    return frame[["seed", "head", "edge", "carry", "with_carry", "without_carry", "selectivity", "selective",
                  "dense_edge", "dense_selectivity", *extra]]


def circuit_table(runs: Seeds[AdditionSeed]) -> pd.DataFrame | None:
    """Per seed: the heads with an outgoing edge among each model's top component edges (None: no circuit)."""
    if any(run.circuit is None for run in runs.runs):
        return None
    return pd.DataFrame([{"seed": run.seed, **{f"{label}_heads": run.circuit.named(label) for label in heads},
                          **{f"{label}_count": len(found) for label, found in heads.items()}}
                         for run, heads in ((run, run.circuit.heads) for run in runs.runs)])


def accuracy_sentence(runs: Seeds[AdditionSeed]) -> str:
    sp, n, first = _spreads(runs), len(runs), runs.first
    layers = len(first.accuracy.kept_per_query_per_layer)
    by_layer = "; ".join(f"layer {i}: {sp[f'kept_per_query_layer{i}'].text(DECIMAL2)}" for i in range(layers))
    return (f"Over {counted(n, 'training seed')}, the sparse toy keeps "
            f"{sp['kept_fraction'].text(PERCENT)} of causal attention edges, or {sp['kept_per_query'].text(DECIMAL2)} "
            f"keys per query, at exact match {sp['sparse_exact_match'].text(PERCENT1)} on "
            f"{first.accuracy.sparse_exact_match['n_all']} held-out problems; the dense toy's exact match "
            f"is {sp['dense_exact_match'].text(PERCENT1)}. Kept keys per query by layer, {by_layer}.")


def graphs_sentence(runs: Seeds[AdditionSeed]) -> str:
    sp, first = _spreads(runs), runs.first
    drawn, weight = first.graphs.edges_drawn(), SIGNIFICANT(first.graphs.min_weight)
    return (f"Seed {first.seed} (the figure): With the same rule (every weight ≥ {weight}), the dense model draws "
            f"{drawn['dense'].min()}–{drawn['dense'].max()} edges per problem and the sparse model "
            f"{drawn['sparse'].min()}–{drawn['sparse'].max()}. Over every seed, the {len(drawn)} problems draw "
            f"{sp['dense_edges_drawn'].text(DECIMAL1)} edges per problem dense and "
            f"{sp['sparse_edges_drawn'].text(DECIMAL1)} sparse.")


def carry_sentence(runs: Seeds[AdditionSeed]) -> str:
    sp, n, selective, table = _spreads(runs), len(runs), _selective(runs), carry_table(runs)
    per_seed = "; ".join(f"seed {row.seed}: {row.edge}, {row.carry} carry, {PERCENT_WHOLE(row.with_carry)} vs "
                         f"{PERCENT_WHOLE(row.without_carry)}" if row.selective else f"seed {row.seed}: none"
                         for row in table.itertuples())
    if not selective:
        head = (f"In none of {n} seeds does the sparse model keep an edge to a carry-deciding digit in a share of "
                f"carry problems at least {CARRY_SELECTIVITY} above the share without ({per_seed}).")
    else:
        heads = sorted({row.head for row in table.itertuples() if row.selective})
        same = (f"the same head, {heads[0]}, in every selective seed" if len(heads) == 1 else
                f"not the same head in every seed ({', '.join(heads)})")
        head = (f"A carry-selective kept edge exists in {len(selective)} of {n} seeds. Each seed's most "
                f"carry-selective edge has selectivity (kept share with the carry minus without) "
                f"{sp['selectivity'].text(DECIMAL2)}: kept in {sp['with_carry'].text(PERCENT1)} of problems with "
                f"the carry and {sp['without_carry'].text(PERCENT1)} without; it is {same}. Per seed: {per_seed}.")
    return (f"{head} The dense models' most selective edges to a carry-deciding digit have a weight gap of "
            f"{sp['dense_selectivity'].text(DECIMAL2)}.")


def circuit_sentence(runs: Seeds[AdditionSeed]) -> str:
    if any(run.circuit is None for run in runs.runs):
        return "No circuit was drawn in this run (`circuit_problems` = 0)."
    sp, first, circuit = _spreads(runs), runs.first, runs.first.circuit
    heads = "; ".join(f"{label}: {circuit.named(label)}" for label in circuit.heads)
    return (f"Seed {first.seed} (the drawing): Heads with an outgoing edge among the top {circuit.n_edges} component "
            f"edges ({circuit.method}): {heads}. Over every seed, {sp['dense_circuit_heads'].text(DECIMAL1)} heads "
            f"dense and {sp['sparse_circuit_heads'].text(DECIMAL1)} sparse have an outgoing edge among the top "
            f"{circuit.n_edges}.")


def addition_metrics(runs: Seeds[AdditionSeed]) -> dict:
    """The chapter's metrics.json: every seed's row and measurements, the spreads and the selective seeds."""
    per_seed = []
    for run, row in zip(runs.runs, runs.per_seed().to_dict(orient="records")):
        entry = {**row, "toy": asdict(run.accuracy), "carry": run.carry.to_metrics(),
                 "figure1_edges_drawn": run.graphs.edges_drawn().to_dict(orient="records")}
        if run.circuit is not None:
            entry["circuit_heads_in_top_edges"] = {label: [list(h) for h in heads]
                                                   for label, heads in run.circuit.heads.items()}
        per_seed.append(entry)
    spreads = {name: values.to_dict() for name, values in _spreads(runs).items()}
    return {"seeds": runs.seeds, "per_seed": per_seed, "spreads": spreads, "selective_seeds": _selective(runs),
            "exact_match_by_class": exact_match_spread(runs).reset_index().to_dict(orient="records")}


ADDITION_RULE = (f"reproduced when, in every seed, the sparse toy solves ≥ 99 %, keeps a carry-selective edge (kept in "
                 f"a share of carry problems ≥ {CARRY_SELECTIVITY} above the share without, from a query that is not "
                 f"itself the carry) and its layer 0 reads the matching digits (some head keeps the edge from the "
                 f"query predicting s0 to a0 or b0, and from the one predicting s1 to a1 or b1, in ≥ "
                 f"{MATCHING_READ_SHARE:.0%} of problems); partly when it solves ≥ 99 % and either holds in some "
                 f"seed; not reproduced otherwise")


def addition_claim(runs: Seeds[AdditionSeed]) -> Claim:
    """Claim ``addition_circuit``: every number a mean with its min-max over training seeds, and in how many seeds a
    carry-selective edge exists (with each seed's edge), judged by :data:`ADDITION_RULE`."""
    sp, n, selective = _spreads(runs), len(runs), _selective(runs)
    sentence = (f"over {n} seeds: sparse toy keeps {sp['kept_fraction'].text(PERCENT1)} of attention edges "
                f"(keys per query {sp['kept_per_query'].inline(DECIMAL2)}; layer 0: "
                f"{sp['kept_per_query_layer0'].inline(DECIMAL2)}) at exact match "
                f"{sp['sparse_exact_match'].text(PERCENT1)}, dense {sp['dense_exact_match'].text(PERCENT1)}; ")
    if not selective:
        sentence += (f"no kept edge to a carry-deciding digit reaches carry selectivity {CARRY_SELECTIVITY} in any of "
                     f"{n} seeds")
    else:
        edges = ", ".join(f"{run.seed}: {run.carry.best.reads}" for run in runs.runs if run.carry.selective)
        sentence += (f"a carry-selective kept edge in {len(selective)} of {n} seeds (by seed {edges}); best edge per "
                     f"seed kept {sp['with_carry'].text(PERCENT1)} with the carry vs "
                     f"{sp['without_carry'].text(PERCENT1)} without, selectivity {sp['selectivity'].text(DECIMAL2)}; "
                     f"dense best weight gap {sp['dense_selectivity'].text(DECIMAL2)}")
    matching = runs.where(lambda run: run.reads.reads_matching_digits)
    sentence += (f"; layer 0 reads the matching digits in {len(matching)} of {n} seeds (shares of problems, per "
                 f"seed: " + "; ".join(f"{run.seed}: " + ", ".join(f"{d} {PERCENT_WHOLE(v)}" for d, v in
                                                                   run.reads.matching_reads.items())
                                      for run in runs.runs) + ")")
    solved = sp["sparse_exact_match"].low >= 0.99
    verdict = ("reproduced" if solved and len(selective) == len(matching) == n else
               "partly" if solved and (selective or matching) else "not reproduced")
    values = {"seeds": runs.seeds, "selective_seeds": selective, "matching_digit_seeds": matching,
              **{name: sp[name].to_dict() for name in ("selectivity", "kept_fraction", "sparse_exact_match")}}
    headline = (f"exact match {sp['sparse_exact_match'].short(PERCENT1)} at "
                f"{sp['kept_per_query'].short(DECIMAL2)} keys per query; a "
                f"carry-selective edge in {len(selective)} of {n} seeds, matching-digit reads in {len(matching)}")
    return Claim("addition_circuit", sentence, values, verdict, ADDITION_RULE, headline)
