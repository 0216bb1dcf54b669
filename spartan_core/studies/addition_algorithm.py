"""Chapter 5's question: on the paper's addition toy, do the sparse model's heads read the matching digits, and
is carry information read only when a carry is needed (Figure 1, then all held-out problems)?"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from ..data import addition
from .common import ModelPair, attention_maps, head_name
from ..formatting import PERCENT
from .seeds import Spread, spread, spread_table

__all__ = [
    "POSITION_NAMES", "ANSWER_QUERIES", "OPERAND_KEYS", "CARRY_FLAGS", "CARRY_RELEVANT_KEYS",
    "parse_problem", "ToyAccuracy", "toy_accuracy", "ExampleGraphs", "example_graphs",
    "ClassMeans", "attention_by_class", "class_means", "top_reads", "LayerReads", "layer_reads",
    "carry_selectivity", "with_position_names", "CarryEdge", "CarryStudy", "carry_study", "ToyCircuit", "toy_circuit",
    "addition_claim", "AdditionSeed", "addition_seed", "AdditionSeeds", "addition_seeds", "seeds_claim",
]

# Addition toy positions: a = a1 a0, b = b1 b0, sum = s4 s3 s2 s1 s0 (s4 = ten-thousands ... s0 = units).
POSITION_NAMES = ("a1", "a0", "+", "b1", "b0", "=", "s4", "s3", "s2", "s1", "s0")
# Query positions whose next-token prediction is an answer digit ("=" predicts s4, ..., s1 predicts s0).
ANSWER_QUERIES = tuple(range(addition.PROMPT_LEN - 1, addition.SEQ_LEN - 1))
OPERAND_KEYS = (0, 1, 3, 4)
# Which carry classes (indices into addition.CARRY_CLASSES) have each kind of carry.
CARRY_FLAGS = {"units": (1, 3), "tens": (2, 3)}
# The operand digits that decide each carry: the units digits decide the units carry, the tens digits the tens carry.
CARRY_RELEVANT_KEYS = {"units": (1, 4), "tens": (0, 3)}


def parse_problem(text: str) -> tuple[int, int]:
    """``"53+21"`` -> ``(53, 21)``: two operands 0..99 joined by ``+``; anything else is refused."""
    parts = str(text).strip().split("+")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) <= 99 for p in parts):
        raise ValueError(f"examples: expected problems like '53+21' with operands 0..99, got {text!r}")
    return int(parts[0]), int(parts[1])


def _predicts(query: int) -> str:
    return POSITION_NAMES[query + 1] if query + 1 < len(POSITION_NAMES) else "-"


# ------------------------------------------------------------------------------------------ the two models


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

    @property
    def sentence(self) -> str:
        layers = ", ".join(f"{k:.2f}" for k in self.kept_per_query_per_layer)
        return (f"The sparse toy keeps {self.kept_fraction:.2%} of causal attention edges ({self.kept_per_query:.2f} "
                f"keys per query; by layer {layers}) at exact match {self.sparse_exact_match['all']:.1%} on "
                f"{self.sparse_exact_match['n_all']} held-out problems (dense {self.dense_exact_match['all']:.1%}).")

    def to_metrics(self) -> dict:
        return asdict(self)


def toy_accuracy(pair: ModelPair) -> ToyAccuracy:
    run, edges = pair.sparse.run, pair.after.edges
    return ToyAccuracy(pair.before.exact_match, pair.after.exact_match, pair.before.ce, pair.after.ce,
                       edges.kept_fraction, edges.kept_per_query, edges.per_layer, edges.kept_per_query_per_layer,
                       run.tau, run.recipe.steps)


# ------------------------------------------------------------------------------------------ Figure 1


@dataclass(frozen=True)
class ExampleGraphs:
    """Attention of both models on a few problems (``dense``/``sparse`` [P, L, H, T, T]) and the weight at or
    above which an edge is drawn."""

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

    def _drawn(self, maps: torch.Tensor) -> list[int]:
        return [int((maps[p].tril() >= self.min_weight).sum()) for p in range(len(self.problems))]

    def edges_drawn(self) -> pd.DataFrame:
        """Edges at or above ``min_weight`` per problem and model: what each panel of the figure draws."""
        return pd.DataFrame({"problem": self.texts, "carry": self.carries, "dense": self._drawn(self.dense),
                             "sparse": self._drawn(self.sparse)})

    @property
    def sentence(self) -> str:
        drawn = self.edges_drawn()
        return (f"With the same rule (every weight ≥ {self.min_weight:g}), the dense model draws "
                f"{drawn['dense'].min()}–{drawn['dense'].max()} edges per problem and the sparse model "
                f"{drawn['sparse'].min()}–{drawn['sparse'].max()}.")


def example_graphs(pair: ModelPair, examples: Sequence[str], min_weight: float) -> ExampleGraphs:
    problems = [parse_problem(text) for text in examples]
    ids = torch.tensor([addition.encode(addition.problem_text(a, b)) for a, b in problems])
    return ExampleGraphs(problems, attention_maps(pair.dense.model, ids), attention_maps(pair.sparse.model, ids),
                         min_weight)


# ------------------------------------------------------------------------------------------ all held-out problems


@dataclass
class ClassMeans:
    """Per-class averages over a dataset: ``weight`` [G, L, H, T, T] mean attention weight, ``kept`` the fraction
    of rows in which the edge's weight is non-zero (for a sparsified model: kept by the deterministic mask; for a
    dense model always 1 on causal edges), ``count`` [G] rows per class."""

    weight: torch.Tensor
    kept: torch.Tensor
    count: torch.Tensor

    def pooled(self, classes: Sequence[int], measure: str = "weight") -> torch.Tensor:
        """[L, H, T, T] average of ``measure`` over the rows of the listed classes (rows weighted equally)."""
        if measure not in ("weight", "kept"):
            raise ValueError(f"measure: expected 'weight' or 'kept', got {measure!r}")
        values = getattr(self, measure)
        index = torch.as_tensor(list(classes), dtype=torch.long)
        counts = self.count[index].double()
        if counts.sum() == 0:
            return torch.full(values.shape[1:], float("nan"), dtype=torch.float64)
        return (values[index].double() * counts[:, None, None, None, None]).sum(0) / counts.sum()

    def overall(self, measure: str = "weight") -> torch.Tensor:
        return self.pooled(range(len(self.count)), measure)


@torch.no_grad()
def attention_by_class(model, input_ids: torch.Tensor, classes: torch.Tensor, n_classes: int,
                       batch_size: int = 500) -> ClassMeans:
    """Average attention weights and kept-edge frequencies per class over all rows of ``input_ids`` [N, T]
    (``classes`` [N] in 0..n_classes-1), streamed in batches of ``batch_size``."""
    if len(classes) != len(input_ids):
        raise ValueError(f"classes: need one class per row ({len(input_ids)}), got {len(classes)}")
    if len(classes) and (int(classes.min()) < 0 or int(classes.max()) >= n_classes):
        raise ValueError(f"classes: values must lie in 0..{n_classes - 1}")
    weight_sum = kept_sum = None
    count = torch.bincount(classes.long(), minlength=n_classes).double()
    for start in range(0, len(input_ids), batch_size):
        maps = attention_maps(model, input_ids[start:start + batch_size]).double()
        group = classes[start:start + batch_size].long()
        if weight_sum is None:
            weight_sum = torch.zeros(n_classes, *maps.shape[1:], dtype=torch.float64)
            kept_sum = torch.zeros_like(weight_sum)
        weight_sum.index_add_(0, group, maps)
        kept_sum.index_add_(0, group, (maps > 0).double())
    if weight_sum is None:
        raise ValueError("input_ids: no rows to average")
    denominator = count.clamp_min(1)[:, None, None, None, None]
    return ClassMeans(weight=weight_sum / denominator, kept=kept_sum / denominator, count=count)


def class_means(pair: ModelPair, batch_size: int) -> dict[str, ClassMeans]:
    """Per-carry-class averages of both models over the toy's held-out split."""
    heldout = pair.dense.data[pair.sparse.info["heldout_split"]]
    return {label: attention_by_class(loaded.model, heldout["input_ids"], heldout["carry"],
                                      len(addition.CARRY_CLASSES), batch_size)
            for label, loaded in (("dense", pair.dense), ("sparse", pair.sparse))}


def top_reads(means: ClassMeans, layer: int, measure: str = "weight", k: int = 2,
              queries: Sequence[int] = ANSWER_QUERIES) -> pd.DataFrame:
    """For each head of ``layer`` and each query position: the ``k`` keys with the largest average ``measure``
    over all problems (``key_1``, ``value_1``, ...), plus the total over all keys."""
    values = means.overall(measure)[layer]
    rows = []
    for head in range(values.shape[0]):
        for query in queries:
            row_values = values[head, query, : query + 1]
            order = torch.argsort(row_values, descending=True, stable=True)[:k]
            row = {"head": head, "query": query, "query_token": POSITION_NAMES[query], "predicts": _predicts(query)}
            for i, j in enumerate(order):
                row.update({f"key_{i + 1}": POSITION_NAMES[int(j)], f"value_{i + 1}": float(row_values[j])})
            rows.append({**row, f"total_{measure}": float(row_values.sum())})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class LayerReads:
    """What each answer position reads in one layer: the dense model's mean weights and the sparse model's kept
    frequencies ([H, T, T] maps over all held-out problems) and their top keys."""

    layer: int
    dense_weight: torch.Tensor
    sparse_kept: torch.Tensor
    dense: pd.DataFrame
    sparse: pd.DataFrame

    def side_by_side(self) -> pd.DataFrame:
        columns = ["head", "query_token", "predicts", "key_1", "value_1", "key_2", "value_2"]
        return self.sparse[columns].merge(self.dense[columns[:2] + columns[3:]], on=["head", "query_token"],
                                          suffixes=("_sparse_kept", "_dense_weight"))

    @property
    def sentence(self) -> str:
        best = self.sparse.sort_values("value_1", ascending=False, kind="stable").groupby("query", sort=True).head(1)
        parts = [f"{row.query_token} → {row.key_1} ({head_name(self.layer, row.head)}, {row.value_1:.0%})"
                 for row in best.sort_values("query").itertuples()]
        return (f"In layer {self.layer} of the sparse model, the most often kept read of each answer position "
                f"(query → key, head, share of problems): {'; '.join(parts)}.")


def layer_reads(means: dict[str, ClassMeans], layer: int = 0) -> LayerReads:
    return LayerReads(layer, means["dense"].overall("weight")[layer], means["sparse"].overall("kept")[layer],
                      top_reads(means["dense"], layer, "weight"), top_reads(means["sparse"], layer, "kept"))


# ------------------------------------------------------------------------------------------ carry selectivity


def carry_selectivity(means: ClassMeans, measure: str = "kept") -> pd.DataFrame:
    """One row per (carry kind, layer, head, answer query, operand key): ``measure`` averaged over the problems
    with that carry (``with_carry``) and without it (``without_carry``), their difference (``selectivity``) and
    whether the key is a digit that decides that carry (``relevant``). Sorted by selectivity, largest first."""
    rows = []
    layers, heads = means.weight.shape[1:3]
    for kind, flagged in CARRY_FLAGS.items():
        others = [c for c in range(len(means.count)) if c not in flagged]
        with_carry, without_carry = means.pooled(flagged, measure), means.pooled(others, measure)
        for layer in range(layers):
            for head in range(heads):
                for query in ANSWER_QUERIES:
                    for key in OPERAND_KEYS:
                        w = float(with_carry[layer, head, query, key])
                        wo = float(without_carry[layer, head, query, key])
                        rows.append({"carry": kind, "layer": layer, "head": head, "query": query, "key": key,
                                     "with_carry": w, "without_carry": wo, "selectivity": w - wo,
                                     "relevant": key in CARRY_RELEVANT_KEYS[kind]})
    frame = pd.DataFrame(rows)
    return frame.sort_values("selectivity", ascending=False, kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class CarryEdge:
    """One attention edge (head, answer query, operand key) and how much more it is used with a carry."""

    carry: str
    layer: int
    head: int
    query: int
    key: int
    with_carry: float
    without_carry: float
    selectivity: float
    relevant: bool

    @classmethod
    def from_row(cls, row) -> "CarryEdge":
        return cls(str(row["carry"]), int(row["layer"]), int(row["head"]), int(row["query"]), int(row["key"]),
                   float(row["with_carry"]), float(row["without_carry"]), float(row["selectivity"]),
                   bool(row["relevant"]))

    @property
    def reads(self) -> str:
        """How the book writes the edge: ``L1H2 s2→a0``."""
        return f"{head_name(self.layer, self.head)} {POSITION_NAMES[self.query]}→{POSITION_NAMES[self.key]}"


@dataclass(frozen=True)
class CarryStudy:
    """Carry selectivity of every edge to an operand digit: the sparse model's kept frequencies (and weights), the
    dense model's weights, the most selective edge to a carry-deciding digit overall and per kind of carry, and
    that edge's use in each carry class."""

    sparse_kept: pd.DataFrame
    sparse_weight: pd.DataFrame
    dense_weight: pd.DataFrame
    best: CarryEdge
    dense_best: CarryEdge
    best_by_carry: dict
    per_class: pd.DataFrame

    @property
    def selective(self) -> bool:
        return self.best.selectivity > 0

    @property
    def sentence(self) -> str:
        b, d = self.best, self.dense_best
        if not self.selective:
            head = "No kept edge to a carry-deciding digit is kept more often when a carry is needed."
        else:
            head = (f"The sparse model's most carry-selective head is {head_name(b.layer, b.head)}: its edge "
                    f"{b.reads} ({b.carry} carry) is kept in {b.with_carry:.1%} of problems with that carry and "
                    f"{b.without_carry:.1%} without.")
        return (f"{head} The dense model's most selective edge to a carry-deciding digit, {d.reads}, has mean weight "
                f"{d.with_carry:.3f} with the carry and {d.without_carry:.3f} without.")

    def selectivity_map(self, source: str, carry: str) -> pd.DataFrame:
        """The largest selectivity over heads of each edge from an answer position to an operand digit, for one
        kind of carry (``units`` or ``tens``): rows are answer positions (and the digit they predict), columns
        operand digits. ``source``: ``sparse_kept``, ``sparse_weight`` or ``dense_weight``."""
        frame = getattr(self, source)
        table = frame[frame["carry"] == carry].pivot_table(index="query", columns="key", values="selectivity",
                                                           aggfunc="max")
        table.index = pd.Index([f"{POSITION_NAMES[q]} → {_predicts(q)}" for q in table.index], name="answer position")
        table.columns = pd.Index([POSITION_NAMES[k] for k in table.columns], name="operand digit")
        return table

    def to_metrics(self) -> dict:
        weight = self.sparse_weight[self.sparse_weight["relevant"]]["selectivity"]
        return {"most_selective_sparse": asdict(self.best), "most_selective_dense": asdict(self.dense_best),
                "most_selective_sparse_by_carry": {k: asdict(e) for k, e in self.best_by_carry.items()},
                "sparse_max_weight_selectivity": float(weight.iloc[0])}

    def claim_part(self) -> str:
        b = self.best
        if not self.selective:
            return "no kept edge to a carry-deciding digit is kept more often when a carry is needed"
        parts = [f"most carry-selective kept edge {b.reads}: kept in {b.with_carry:.0%} of {b.carry}-carry problems "
                 f"vs {b.without_carry:.0%} without "
                 f"(dense, best relevant weight gap {self.dense_best.selectivity:.2f})"]
        for kind, edge in self.best_by_carry.items():
            if kind == b.carry:
                continue
            parts.append(f"best {kind}-carry edge {edge.reads}: {edge.with_carry:.0%} vs {edge.without_carry:.0%}"
                         if edge.selectivity > 0 else
                         f"no kept edge to the {kind} digits is kept more often with a {kind} carry")
        return "; ".join(parts)


def carry_study(means: dict[str, ClassMeans]) -> CarryStudy:
    sparse_kept = carry_selectivity(means["sparse"], "kept")
    dense_weight = carry_selectivity(means["dense"], "weight")
    relevant = sparse_kept[sparse_kept["relevant"]]
    best = CarryEdge.from_row(relevant.iloc[0])
    firsts = relevant.groupby("carry", sort=False).head(1)
    by_carry = {row["carry"]: CarryEdge.from_row(row) for _, row in firsts.iterrows()}
    edge = (slice(None), best.layer, best.head, best.query, best.key)
    per_class = pd.DataFrame({"sparse_kept": means["sparse"].kept[edge].numpy(),
                              "sparse_weight": means["sparse"].weight[edge].numpy(),
                              "dense_weight": means["dense"].weight[edge].numpy()},
                             index=pd.Index(addition.CARRY_CLASSES, name="carry_class"))
    return CarryStudy(sparse_kept, carry_selectivity(means["sparse"], "weight"), dense_weight, best,
                      CarryEdge.from_row(dense_weight[dense_weight["relevant"]].iloc[0]), by_carry, per_class)


def with_position_names(frame: pd.DataFrame) -> pd.DataFrame:
    """A selectivity frame with the query, predicted and key tokens named, for display."""
    return frame.assign(query_token=frame["query"].map(POSITION_NAMES.__getitem__),
                        predicts=frame["query"].map(_predicts), key_token=frame["key"].map(POSITION_NAMES.__getitem__))


# ------------------------------------------------------------------------------------------ the circuit


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

    @property
    def sentence(self) -> str:
        parts = [f"{label}: {', '.join(head_name(*h) for h in heads) or 'none'}" for label, heads in self.heads.items()]
        return (f"Heads with an outgoing edge among the top {self.n_edges} component edges ({self.method}): "
                f"{'; '.join(parts)}.")

    def to_metrics(self) -> dict:
        return {label: [list(h) for h in heads] for label, heads in self.heads.items()}


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


def addition_claim(accuracy: ToyAccuracy, carry: CarryStudy) -> str:
    """The claims table's line for the addition toy."""
    return (f"sparse toy keeps {accuracy.kept_fraction:.1%} of attention edges ({accuracy.kept_per_query:.2f} keys "
            f"per query; layer 0: {accuracy.kept_per_query_per_layer[0]:.2f}) at exact match "
            f"{accuracy.sparse_exact_match['all']:.1%} (dense {accuracy.dense_exact_match['all']:.1%}); "
            + carry.claim_part())


# ------------------------------------------------------------------------------------------ over training seeds


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
        """The seed's headline numbers as one flat row (the names :meth:`AdditionSeeds.spreads` uses)."""
        a, c = self.accuracy, self.carry
        drawn = self.graphs.edges_drawn()
        row = {"seed": self.seed, "dense_exact_match": float(a.dense_exact_match["all"]),
               "sparse_exact_match": float(a.sparse_exact_match["all"]), "dense_heldout_ce": float(a.dense_heldout_ce),
               "sparse_heldout_ce": float(a.sparse_heldout_ce), "kept_fraction": float(a.kept_fraction),
               "kept_per_query": float(a.kept_per_query),
               **{f"kept_per_query_layer{i}": float(k) for i, k in enumerate(a.kept_per_query_per_layer)},
               "dense_edges_drawn": float(drawn["dense"].mean()), "sparse_edges_drawn": float(drawn["sparse"].mean()),
               "selective": c.selective, "head": head_name(c.best.layer, c.best.head), "edge": c.best.reads,
               "carry": c.best.carry, "with_carry": c.best.with_carry, "without_carry": c.best.without_carry,
               "selectivity": c.best.selectivity, "dense_edge": c.dense_best.reads,
               "dense_selectivity": c.dense_best.selectivity}
        for kind, edge in c.best_by_carry.items():
            row.update({f"{kind}_edge": edge.reads, f"{kind}_selectivity": edge.selectivity})
        if self.circuit is not None:
            row.update({f"{label}_circuit_heads": len(heads) for label, heads in self.circuit.heads.items()})
        return row


def addition_seed(pair: ModelPair, seed: int, *, examples: Sequence[str], min_weight: float, batch_size: int,
                  circuit_problems: int, circuit_edges: int, circuit_method: str) -> AdditionSeed:
    """Measure one training seed's pair (``circuit_problems`` 0: no circuit)."""
    means = class_means(pair, batch_size)
    circuit = toy_circuit(pair, circuit_problems, circuit_edges, circuit_method) if circuit_problems else None
    config = pair.sparse.model.config
    return AdditionSeed(seed, toy_accuracy(pair), example_graphs(pair, examples, min_weight),
                        layer_reads(means, layer=0), carry_study(means), circuit, int(means["dense"].count.sum()),
                        config.n_layer, config.n_head)


def _with_seed(frames) -> pd.DataFrame:
    """Concatenate ``(seed, frame)`` pairs into one frame with a ``seed`` column first."""
    parts = [frame.assign(seed=seed) for seed, frame in frames]
    joined = pd.concat(parts, ignore_index=True)
    return joined[["seed", *[c for c in joined.columns if c != "seed"]]]


def _two(value: float) -> str:
    return f"{value:.2f}"


def _one(value: float) -> str:
    return f"{value:.1f}"


def _fraction(value: float) -> str:
    return f"{value:.1%}"


@dataclass(frozen=True)
class AdditionSeeds:
    """The chapter's measurements for every training seed (``runs``, in the order of ``train_seeds``): per-seed
    tables with a ``seed`` column, each headline as a spread over seeds, and the sentences built from them. The
    figures of one model use ``first``."""

    runs: tuple

    def __post_init__(self):
        if not self.runs:
            raise ValueError("runs: need at least one training seed")

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    @property
    def first(self) -> AdditionSeed:
        return self.runs[0]

    def per_seed(self) -> pd.DataFrame:
        return pd.DataFrame([run.row() for run in self.runs])

    def exact_match_table(self) -> pd.DataFrame:
        """Held-out exact match per seed and carry class."""
        return _with_seed((run.seed, run.accuracy.table().reset_index()) for run in self.runs)

    def exact_match_spread(self) -> pd.DataFrame:
        """Per carry class: mean, min and max over seeds of both models' exact match, and n (seeds)."""
        return spread_table(self.exact_match_table(), "carry_class", ["dense_exact_match", "sparse_exact_match"])

    def edges_drawn_table(self) -> pd.DataFrame:
        return _with_seed((run.seed, run.graphs.edges_drawn()) for run in self.runs)

    def reads_table(self, label: str) -> pd.DataFrame:
        """Layer-0 top reads of ``label`` ("dense" or "sparse") per seed."""
        return _with_seed((run.seed, getattr(run.reads, label)) for run in self.runs)

    def selectivity_table(self, name: str) -> pd.DataFrame:
        """A selectivity frame of :class:`CarryStudy` (``sparse_kept``, ``sparse_weight``, ``dense_weight``) per
        seed."""
        return _with_seed((run.seed, getattr(run.carry, name)) for run in self.runs)

    def per_class_table(self) -> pd.DataFrame:
        """Each seed's most carry-selective edge, its use per carry class (the edge may differ by seed)."""
        return _with_seed((run.seed, run.carry.per_class.reset_index().assign(edge=run.carry.best.reads))
                          for run in self.runs)

    def carry_table(self) -> pd.DataFrame:
        """Per seed: the most carry-selective kept edge (which head, which edge, which carry), its kept share with
        and without the carry, whether it is selective at all, and the dense model's most selective edge."""
        columns = ["seed", "head", "edge", "carry", "with_carry", "without_carry", "selectivity", "selective",
                   "dense_edge", "dense_selectivity"]
        frame = self.per_seed()
        extra = [c for c in frame.columns if c.endswith(("units_edge", "units_selectivity", "tens_edge",
                                                         "tens_selectivity"))]
        return frame[columns + extra]

    def circuit_table(self) -> pd.DataFrame | None:
        """Per seed: the heads with an outgoing edge among each model's top component edges."""
        if any(run.circuit is None for run in self.runs):
            return None
        return pd.DataFrame([{"seed": run.seed, **{f"{label}_heads": ", ".join(head_name(*h) for h in heads) or "none"
                                                   for label, heads in run.circuit.heads.items()},
                              **{f"{label}_count": len(heads) for label, heads in run.circuit.heads.items()}}
                             for run in self.runs])

    def circuit_edges_table(self) -> pd.DataFrame | None:
        """Each seed's top component edges of both models."""
        if any(run.circuit is None for run in self.runs):
            return None
        return _with_seed((run.seed, run.circuit.top_edges()) for run in self.runs)

    def _spread_names(self) -> list[str]:
        layers = len(self.first.accuracy.kept_per_query_per_layer)
        names = ["dense_exact_match", "sparse_exact_match", "dense_heldout_ce", "sparse_heldout_ce", "kept_fraction",
                 "kept_per_query", *[f"kept_per_query_layer{i}" for i in range(layers)], "dense_edges_drawn",
                 "sparse_edges_drawn", "with_carry", "without_carry", "selectivity", "dense_selectivity"]
        if all(run.circuit is not None for run in self.runs):
            names += ["dense_circuit_heads", "sparse_circuit_heads"]
        return names

    def spreads(self) -> dict[str, Spread]:
        """Each headline number over the training seeds (mean, min, max, n)."""
        frame = self.per_seed()
        return {name: spread(frame[name]) for name in self._spread_names()}

    @property
    def selective_seeds(self) -> list[int]:
        """Seeds whose sparse model has a kept edge to a carry-deciding digit kept more often with the carry."""
        return [run.seed for run in self.runs if run.carry.selective]

    @property
    def accuracy_sentence(self) -> str:
        sp, n = self.spreads(), len(self.runs)
        layers = len(self.first.accuracy.kept_per_query_per_layer)
        by_layer = "; ".join(f"layer {i}: {sp[f'kept_per_query_layer{i}'].text(_two)}" for i in range(layers))
        return (f"Over {n} training seed{'s' if n > 1 else ''}, the sparse toy keeps "
                f"{sp['kept_fraction'].text(PERCENT)} of causal attention edges, or {sp['kept_per_query'].text(_two)} "
                f"keys per query, at exact match {sp['sparse_exact_match'].text(_fraction)} on "
                f"{self.first.accuracy.sparse_exact_match['n_all']} held-out problems; the dense toy's exact match "
                f"is {sp['dense_exact_match'].text(_fraction)}. Kept keys per query by layer, {by_layer}.")

    @property
    def graphs_sentence(self) -> str:
        sp, first = self.spreads(), self.first
        return (f"Seed {first.seed} (the figure): {first.graphs.sentence} Over every seed, the "
                f"{len(first.graphs.problems)} problems draw {sp['dense_edges_drawn'].text(_one)} edges per problem "
                f"dense and {sp['sparse_edges_drawn'].text(_one)} sparse.")

    @property
    def reads_sentence(self) -> str:
        return f"Seed {self.first.seed} (the maps above): {self.first.reads.sentence}"

    @property
    def carry_sentence(self) -> str:
        sp, n, selective = self.spreads(), len(self.runs), self.selective_seeds
        per_seed = "; ".join(f"seed {row.seed}: {row.edge}, {row.carry} carry, {row.with_carry:.0%} vs "
                             f"{row.without_carry:.0%}" if row.selective else f"seed {row.seed}: none"
                             for row in self.carry_table().itertuples())
        if not selective:
            head = (f"In none of {n} seeds does the sparse model keep an edge to a carry-deciding digit more often "
                    f"when a carry is needed ({per_seed}).")
        else:
            heads = sorted({row.head for row in self.carry_table().itertuples() if row.selective})
            same = (f"the same head, {heads[0]}, in every selective seed" if len(heads) == 1 else
                    f"not the same head in every seed ({', '.join(heads)})")
            head = (f"A carry-selective kept edge exists in {len(selective)} of {n} seeds. Each seed's most "
                    f"carry-selective edge has selectivity (kept share with the carry minus without) "
                    f"{sp['selectivity'].text(_two)}: kept in {sp['with_carry'].text(_fraction)} of problems with "
                    f"the carry and {sp['without_carry'].text(_fraction)} without; it is {same}. Per seed: "
                    f"{per_seed}.")
        return (f"{head} The dense models' most selective edges to a carry-deciding digit have a weight gap of "
                f"{sp['dense_selectivity'].text(_two)}.")

    @property
    def circuit_sentence(self) -> str:
        if any(run.circuit is None for run in self.runs):
            return "No circuit was drawn in this run (`circuit_problems` = 0)."
        sp, first = self.spreads(), self.first
        return (f"Seed {first.seed} (the drawing): {first.circuit.sentence} Over every seed, "
                f"{sp['dense_circuit_heads'].text(_one)} heads dense and {sp['sparse_circuit_heads'].text(_one)} "
                f"sparse have an outgoing edge among the top {first.circuit.n_edges}.")

    def to_metrics(self) -> dict:
        per_seed = []
        for run, row in zip(self.runs, self.per_seed().to_dict(orient="records")):
            entry = {**row, "toy": run.accuracy.to_metrics(), "carry": run.carry.to_metrics(),
                     "figure1_edges_drawn": run.graphs.edges_drawn().to_dict(orient="records")}
            if run.circuit is not None:
                entry["circuit_heads_in_top_edges"] = run.circuit.to_metrics()
            per_seed.append(entry)
        classes = self.exact_match_spread().reset_index().to_dict(orient="records")
        return {"seeds": self.seeds, "per_seed": per_seed,
                "spreads": {name: s.to_dict() for name, s in self.spreads().items()},
                "selective_seeds": self.selective_seeds, "exact_match_by_class": classes}


def addition_seeds(train_seeds: Sequence[int], load, **measure) -> AdditionSeeds:
    """Load each training seed's pair with ``load(seed)`` (``common.load_pair``) and measure it with
    :func:`addition_seed` (``measure``: its keyword arguments); no pair is kept once measured."""
    return AdditionSeeds(tuple(addition_seed(load(seed), seed, **measure) for seed in train_seeds))


def _inline(value: Spread, fmt) -> str:
    """A spread inside parentheses: "1.5%, 1.2%–1.8% over 3 seeds" (no nested brackets)."""
    if value.n == 1:
        return f"{fmt(value.mean)}, 1 seed"
    return f"{fmt(value.mean)}, {fmt(value.low)}–{fmt(value.high)} over {value.n} {value.over}"


def seeds_claim(study: AdditionSeeds) -> str:
    """The claims table's line for the addition toy: every number a mean with its min-max over training seeds,
    and in how many seeds a carry-selective edge exists (with the edge of each seed)."""
    sp, n, selective = study.spreads(), len(study.runs), study.selective_seeds
    summary = (f"over {n} seeds: sparse toy keeps {sp['kept_fraction'].text(_fraction)} of attention edges "
               f"(keys per query {_inline(sp['kept_per_query'], _two)}; layer 0: "
               f"{_inline(sp['kept_per_query_layer0'], _two)}) at exact match "
               f"{sp['sparse_exact_match'].text(_fraction)}, dense {sp['dense_exact_match'].text(_fraction)}; ")
    if not selective:
        return summary + f"no kept edge to a carry-deciding digit is kept more often with a carry in any of {n} seeds"
    edges = ", ".join(f"{row.seed}: {row.edge}" for row in study.carry_table().itertuples() if row.selective)
    return summary + (f"a carry-selective kept edge in {len(selective)} of {n} seeds (by seed {edges}); best edge "
                      f"per seed kept {sp['with_carry'].text(_fraction)} with the carry vs "
                      f"{sp['without_carry'].text(_fraction)} without, selectivity {sp['selectivity'].text(_two)}; "
                      f"dense best weight gap {sp['dense_selectivity'].text(_two)}")
