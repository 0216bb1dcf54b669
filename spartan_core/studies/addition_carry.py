"""Chapter 5's second question, over all held-out problems: is carry information read only when a carry is needed?
Per-class attention averages of both models, each edge's carry selectivity, and the most carry-selective edge."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from ..data import addition
from ..formatting import DECIMAL3, PERCENT1
from ..mechanism.class_means import ClassMeans, attention_by_class
from .common import ModelPair, head_name

__all__ = ["POSITION_NAMES", "ANSWER_QUERIES", "OPERAND_KEYS", "CARRY_FLAGS", "CARRY_RELEVANT_KEYS", "CARRY_IN_QUERY",
           "CARRY_SELECTIVITY", "predicts",
           "ClassMeans", "class_means", "carry_selectivity", "with_position_names", "CarryEdge", "CarryStudy",
           "carry_study"]

# Addition toy positions: a = a1 a0, b = b1 b0, sum = s4 s3 s2 s1 s0 (s4 = ten-thousands ... s0 = units).
POSITION_NAMES = ("a1", "a0", "+", "b1", "b0", "=", "s4", "s3", "s2", "s1", "s0")
# Query positions whose next-token prediction is an answer digit ("=" predicts s4, ..., s1 predicts s0).
ANSWER_QUERIES = tuple(range(addition.PROMPT_LEN - 1, addition.SEQ_LEN - 1))
OPERAND_KEYS = (0, 1, 3, 4)
# Which carry classes (indices into addition.CARRY_CLASSES) have each kind of carry.
CARRY_FLAGS = {"units": (1, 3), "tens": (2, 3)}
# The operand digits that decide each carry: the units digits decide the units carry, the tens digits the tens carry.
CARRY_RELEVANT_KEYS = {"units": (1, 4), "tens": (0, 3)}
# Answer queries whose own token is that carry: s2, the hundreds digit of a sum below 200, is the tens carry. At layer 0
# the gate is a function of the (query, key) tokens alone, so an edge from such a query is carry-selective by
# construction and tells nothing about the model reading the carry.
CARRY_IN_QUERY = {"units": (), "tens": (POSITION_NAMES.index("s2"),)}
# An edge counts as carry-selective when it is kept in at least this much larger a share of the problems with the carry
# than of those without (kept in 80 % with and 20 % without: 0.6).
CARRY_SELECTIVITY = 0.5


def predicts(query: int) -> str:
    """The token a query position predicts (the next one), ``-`` after the last."""
    return POSITION_NAMES[query + 1] if query + 1 < len(POSITION_NAMES) else "-"


def class_means(pair: ModelPair, batch_size: int) -> dict[str, ClassMeans]:
    """Per-carry-class averages of both models over the toy's held-out split."""
    heldout = pair.dense.data[pair.sparse.info["heldout_split"]]
    return {label: attention_by_class(loaded.model, heldout["input_ids"], heldout["carry"],
                                      len(addition.CARRY_CLASSES), batch_size)
            for label, loaded in (("dense", pair.dense), ("sparse", pair.sparse))}


def carry_selectivity(means: ClassMeans, measure: str = "kept") -> pd.DataFrame:
    """One row per (carry kind, layer, head, answer query, operand key): ``measure`` averaged over the problems
    with that carry (``with_carry``) and without it (``without_carry``), their difference (``selectivity``),
    whether the key is a digit that decides that carry (``relevant``) and whether the query's own token is the carry
    (``carry_in_query``). Sorted by selectivity, largest first."""
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
                                     "relevant": key in CARRY_RELEVANT_KEYS[kind],
                                     "carry_in_query": query in CARRY_IN_QUERY[kind]})
    frame = pd.DataFrame(rows)
    return frame.sort_values("selectivity", ascending=False, kind="stable").reset_index(drop=True)


def with_position_names(frame: pd.DataFrame) -> pd.DataFrame:
    """A selectivity frame with the query, predicted and key tokens named, for display."""
    return frame.assign(query_token=frame["query"].map(POSITION_NAMES.__getitem__),
                        predicts=frame["query"].map(predicts), key_token=frame["key"].map(POSITION_NAMES.__getitem__))


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
        """How the book writes the edge: ``a1.h2 s2→a0``."""
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
        """Whether the most selective kept edge to a carry-deciding digit, from a query that is not itself the carry,
        reaches :data:`CARRY_SELECTIVITY`."""
        return self.best.selectivity >= CARRY_SELECTIVITY

    @property
    def sentence(self) -> str:
        b, d = self.best, self.dense_best
        if not self.selective:
            head = (f"No kept edge to a carry-deciding digit (from a query that is not itself the carry) is kept in "
                    f"a share of problems with the carry at least {CARRY_SELECTIVITY} above the share without; the "
                    f"closest, {b.reads} ({b.carry} carry), is kept in {PERCENT1(b.with_carry)} with and "
                    f"{PERCENT1(b.without_carry)} without.")
        else:
            head = (f"The sparse model's most carry-selective head is {head_name(b.layer, b.head)}: its edge "
                    f"{b.reads} ({b.carry} carry) is kept in {PERCENT1(b.with_carry)} of problems with that carry "
                    f"and {PERCENT1(b.without_carry)} without.")
        return (f"{head} The dense model's most selective edge to a carry-deciding digit, {d.reads}, has mean weight "
                f"{DECIMAL3(d.with_carry)} with the carry and {DECIMAL3(d.without_carry)} without.")

    def selectivity_map(self, source: str, carry: str) -> pd.DataFrame:
        """The largest selectivity over heads of each edge from an answer position to an operand digit, for one
        kind of carry (``units`` or ``tens``): rows are answer positions (and the digit they predict), columns
        operand digits. ``source``: ``sparse_kept``, ``sparse_weight`` or ``dense_weight``."""
        frame = getattr(self, source)
        table = frame[frame["carry"] == carry].pivot_table(index="query", columns="key", values="selectivity",
                                                           aggfunc="max")
        table.index = pd.Index([f"{POSITION_NAMES[q]} → {predicts(q)}" for q in table.index], name="answer position")
        table.columns = pd.Index([POSITION_NAMES[k] for k in table.columns], name="operand digit")
        return table

    def to_metrics(self) -> dict:
        weight = self.sparse_weight[self.sparse_weight["relevant"] & ~self.sparse_weight["carry_in_query"]]["selectivity"]
        return {"most_selective_sparse": asdict(self.best), "most_selective_dense": asdict(self.dense_best),
                "most_selective_sparse_by_carry": {k: asdict(e) for k, e in self.best_by_carry.items()},
                "sparse_max_weight_selectivity": float(weight.iloc[0])}


def carry_study(means: dict[str, ClassMeans]) -> CarryStudy:
    sparse_kept = carry_selectivity(means["sparse"], "kept")
    dense_weight = carry_selectivity(means["dense"], "weight")
    relevant = sparse_kept[sparse_kept["relevant"] & ~sparse_kept["carry_in_query"]]
    best = CarryEdge.from_row(relevant.iloc[0])
    firsts = relevant.groupby("carry", sort=False).head(1)
    by_carry = {row["carry"]: CarryEdge.from_row(row) for _, row in firsts.iterrows()}
    edge = (slice(None), best.layer, best.head, best.query, best.key)
    per_class = pd.DataFrame({"sparse_kept": means["sparse"].kept[edge].numpy(),
                              "sparse_weight": means["sparse"].weight[edge].numpy(),
                              "dense_weight": means["dense"].weight[edge].numpy()},
                             index=pd.Index(addition.CARRY_CLASSES, name="carry_class"))
    return CarryStudy(sparse_kept, carry_selectivity(means["sparse"], "weight"), dense_weight, best,
                      CarryEdge.from_row(dense_weight[dense_weight["relevant"] & ~dense_weight["carry_in_query"]].iloc[0]),
                      by_carry, per_class)
