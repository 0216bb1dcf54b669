"""Numbers over training seeds. A toy retrained on another machine, or at another thread count, is another
model, so one run's number is one draw: the book reports every headline as a mean with its min-max over
training seeds (and, for circuits, over seeds x prompt sets), built here from the per-seed values."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

__all__ = ["Spread", "spread", "spread_table", "table_cell", "percent", "times", "plain"]


def percent(value: float) -> str:
    return f"{value:.2%}"


def times(value: float) -> str:
    return f"{value:.1f}x"


def plain(value: float) -> str:
    return f"{value:.3g}"


@dataclass(frozen=True)
class Spread:
    """Values of one measurement over ``n`` draws (training seeds, or seeds x prompt sets)."""

    values: tuple[float, ...]
    over: str = "seeds"

    def __post_init__(self):
        if not self.values:
            raise ValueError("values: a spread needs at least one value")
        if not all(math.isfinite(v) for v in self.values):
            raise ValueError(f"values: not all finite ({list(self.values)})")

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        # fsum and the clamp keep min <= mean <= max exactly (a plain sum of equal values can round above them)
        return min(max(math.fsum(self.values) / self.n, self.low), self.high)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def text(self, fmt: Callable[[float], str] = plain) -> str:
        """``"1.47% (1.31%-1.62% over 3 seeds)"``; a single draw says so (``"1.47% (1 seed)"``)."""
        if self.n == 1:
            return f"{fmt(self.mean)} (1 {self.over.rstrip('s')})"
        return f"{fmt(self.mean)} ({fmt(self.low)}–{fmt(self.high)} over {self.n} {self.over})"

    def summary(self, fmt: Callable[[float], str] = plain) -> str:
        """:meth:`text`, or ``"0.09 (all 3 seeds)"`` when every draw shows the same value at ``fmt``'s precision."""
        if self.n > 1 and fmt(self.low) == fmt(self.high):
            every = f"both {self.over}" if self.n == 2 else f"all {self.n} {self.over}"
            return f"{fmt(self.mean)} ({every})"
        return self.text(fmt)

    def to_dict(self) -> dict:
        return {"mean": self.mean, "min": self.low, "max": self.high, "n": self.n, "values": list(self.values)}


def spread(values: Iterable[float], over: str = "seeds") -> Spread:
    return Spread(tuple(float(v) for v in values), over)


def spread_table(frame: pd.DataFrame, by: str | Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """Per group of ``by``: mean, min and max of each of ``columns`` over the rows (one row per seed), and n."""
    grouped = frame.groupby(by, sort=False)[list(columns)]
    table = grouped.agg(["mean", "min", "max"])
    table.columns = [f"{column} {stat}" for column, stat in table.columns]
    table["n"] = frame.groupby(by, sort=False).size()
    return table


def table_cell(values: Spread, fmt: Callable[[float], str] = plain) -> str:
    """A table cell: the mean, and its min-max over draws where there are several that differ at ``fmt``."""
    if values.n == 1 or fmt(values.low) == fmt(values.high):
        return fmt(values.mean)
    return f"{fmt(values.mean)} ({fmt(values.low)}–{fmt(values.high)})"
