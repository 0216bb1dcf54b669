"""Numbers over training seeds. A toy retrained on another machine, or at another thread count, is another
model, so one run's number is one draw: the book reports every headline as a mean with its min-max over
training seeds (and, for circuits, over seeds x prompt sets), built here from the per-seed values. Every chapter
keeps its per-seed measurements in one :class:`Seeds` of its own row type."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import pandas as pd

from ..formatting import SIGNIFICANT

__all__ = ["Spread", "Seeds", "SeedRow", "spread", "spread_table", "table_cell"]


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

    def text(self, fmt: Callable[[float], str] = SIGNIFICANT) -> str:
        """``"1.47% (1.31%-1.62% over 3 seeds)"``; a single draw says so (``"1.47% (1 seed)"``)."""
        if self.n == 1:
            return f"{fmt(self.mean)} (1 {self.over.rstrip('s')})"
        return f"{fmt(self.mean)} ({fmt(self.low)}–{fmt(self.high)} over {self.n} {self.over})"

    def summary(self, fmt: Callable[[float], str] = SIGNIFICANT) -> str:
        """:meth:`text`, or ``"0.09 (all 3 seeds)"`` when every draw shows the same value at ``fmt``'s precision."""
        if self.n > 1 and fmt(self.low) == fmt(self.high):
            every = f"both {self.over}" if self.n == 2 else f"all {self.n} {self.over}"
            return f"{fmt(self.mean)} ({every})"
        return self.text(fmt)

    def inline(self, fmt: Callable[[float], str] = SIGNIFICANT) -> str:
        """:meth:`text` for inside parentheses: ``"0.04, 0.03–0.05 over 3 seeds"`` (no nested brackets)."""
        if self.n == 1:
            return f"{fmt(self.mean)}, 1 {self.over.rstrip('s')}"
        return f"{fmt(self.mean)}, {fmt(self.low)}–{fmt(self.high)} over {self.n} {self.over}"

    def short(self, fmt: Callable[[float], str] = SIGNIFICANT) -> str:
        """The mean and its range without the count, for a table or sentence that says the count once:
        ``"1.47% (1.31%–1.62%)"``, or the mean alone when every draw shows the same value at ``fmt``'s precision."""
        if fmt(self.low) == fmt(self.high):
            return fmt(self.mean)
        return f"{fmt(self.mean)} ({fmt(self.low)}–{fmt(self.high)})"

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


def table_cell(values: Spread | None, fmt: Callable[[float], str] = SIGNIFICANT) -> str | None:
    """A table cell: the mean, and its min-max over draws where there are several that differ at ``fmt``; empty
    (None) where the value was not measured."""
    if values is None:
        return None
    if values.n == 1 or fmt(values.low) == fmt(values.high):
        return fmt(values.mean)
    return f"{fmt(values.mean)} ({fmt(values.low)}–{fmt(values.high)})"


class SeedRow(Protocol):
    """What one training seed's measurement offers :class:`Seeds`: its seed and its headline numbers, flat."""

    seed: int

    def row(self) -> dict: ...


Row = TypeVar("Row", bound=SeedRow)


@dataclass(frozen=True)
class Seeds(Generic[Row]):
    """One chapter's measurements over training seeds: one row object per seed, in the order of the seeds asked
    for. The chapter's rows say what one seed measured; this says what every chapter asks of them (the per-seed
    table, each headline number as a :class:`Spread`, the seeds where something holds)."""

    runs: tuple[Row, ...]

    def __post_init__(self):
        if not self.runs:
            raise ValueError("runs: need at least one training seed")

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    @property
    def first(self) -> Row:
        """The first seed's measurement: the one whose maps and graphs a chapter draws."""
        return self.runs[0]

    def __len__(self) -> int:
        return len(self.runs)

    def per_seed(self) -> pd.DataFrame:
        """One row per training seed: ``seed`` and the row's headline numbers."""
        return pd.DataFrame([{"seed": run.seed, **run.row()} for run in self.runs])

    def spread(self, name: str, over: str = "seeds") -> Spread:
        """Headline number ``name`` of every row over the seeds."""
        return spread((run.row()[name] for run in self.runs), over)

    def spreads(self, names: Iterable[str]) -> dict[str, Spread]:
        """Each of headline numbers ``names`` over the seeds, leaving out any that some seed's row lacks."""
        frame = self.per_seed()
        return {name: spread(frame[name]) for name in names if name in frame and frame[name].notna().all()}

    def spread_record(self, names: Iterable[str]) -> dict[str, dict]:
        """:meth:`spreads` as plain dicts (``mean``, ``min``, ``max``, ``n``, ``values``) for metrics.json."""
        return {name: values.to_dict() for name, values in self.spreads(names).items()}

    def where(self, holds: Callable[[Row], bool]) -> list[int]:
        """The seeds whose row ``holds``."""
        return [run.seed for run in self.runs if holds(run)]

    def stacked(self, table: Callable[[Row], pd.DataFrame]) -> pd.DataFrame:
        """``table(row)`` of every seed, one above the other, with a ``seed`` column first."""
        frames = [table(run).assign(seed=run.seed) for run in self.runs]
        frame = pd.concat(frames, ignore_index=True)
        return frame[["seed", *[c for c in frame.columns if c != "seed"]]]

    @classmethod
    def measure(cls, seeds: Iterable[int], measure_one: Callable[[int], Row]) -> "Seeds[Row]":
        return cls(tuple(measure_one(seed) for seed in seeds))
