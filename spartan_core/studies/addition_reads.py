"""Figure 1's first statement, on the addition toy: layer 0 of the sparse model reads the matching digits (each
answer digit's query keeps edges to the operand digits of the same place value). :func:`layer_reads` gathers what
each answer position reads in one layer, dense and sparse, over all held-out problems; :mod:`.addition_algorithm`
judges chapter 5's claim with it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from ..formatting import PERCENT_WHOLE
from .addition_carry import ANSWER_QUERIES, POSITION_NAMES, ClassMeans, predicts
from .common import head_name

__all__ = ["top_reads", "MATCHING_DIGITS", "MATCHING_READ_SHARE", "LayerReads", "layer_reads"]


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
            row = {"head": head, "query": query, "query_token": POSITION_NAMES[query], "predicts": predicts(query)}
            for i, j in enumerate(order):
                row.update({f"key_{i + 1}": POSITION_NAMES[int(j)], f"value_{i + 1}": float(row_values[j])})
            rows.append({**row, f"total_{measure}": float(row_values.sum())})
    return pd.DataFrame(rows)


# Figure 1's layer-0 "matching digit" reads: the operand digits of the place value of the answer digit a query predicts
# (the units digit s0 from a0 and b0, the tens digit s1 from a1 and b1), and the share of problems in which some head
# must keep such an edge for the layer to count as reading it.
MATCHING_DIGITS = {"s0": ("a0", "b0"), "s1": ("a1", "b1")}
MATCHING_READ_SHARE = 0.5


@dataclass(frozen=True)
class LayerReads:
    """What each answer position reads in one layer: the dense model's mean weights and the sparse model's kept
    frequencies ([H, T, T] maps over all held-out problems) and their top keys."""

    layer: int
    dense_weight: torch.Tensor
    sparse_kept: torch.Tensor
    dense: pd.DataFrame
    sparse: pd.DataFrame

    @property
    def matching_reads(self) -> dict[str, float]:
        """Per answer digit of :data:`MATCHING_DIGITS`: the largest share of problems in which a head of this layer
        keeps an edge from the query that predicts it to an operand digit of the same place value."""
        shares = {}
        for digit, operands in MATCHING_DIGITS.items():
            query, keys = POSITION_NAMES.index(digit) - 1, [POSITION_NAMES.index(k) for k in operands]
            shares[digit] = float(self.sparse_kept[:, query, keys].max())
        return shares

    @property
    def reads_matching_digits(self) -> bool:
        return all(share >= MATCHING_READ_SHARE for share in self.matching_reads.values())

    def side_by_side(self) -> pd.DataFrame:
        columns = ["head", "query_token", "predicts", "key_1", "value_1", "key_2", "value_2"]
        return self.sparse[columns].merge(self.dense[columns[:2] + columns[3:]], on=["head", "query_token"],
                                          suffixes=("_sparse_kept", "_dense_weight"))

    @property
    def sentence(self) -> str:
        best = self.sparse.sort_values("value_1", ascending=False, kind="stable").groupby("query", sort=True).head(1)
        parts = [f"{row.query_token} → {row.key_1} ({head_name(self.layer, row.head)}, {PERCENT_WHOLE(row.value_1)})"
                 for row in best.sort_values("query").itertuples()]
        return (f"In layer {self.layer} of the sparse model, the most often kept read of each answer position "
                f"(query → key, head, share of problems): {'; '.join(parts)}.")


def layer_reads(means: dict[str, ClassMeans], layer: int = 0) -> LayerReads:
    return LayerReads(layer, means["dense"].overall("weight")[layer], means["sparse"].overall("kept")[layer],
                      top_reads(means["dense"], layer, "weight"), top_reads(means["sparse"], layer, "kept"))
