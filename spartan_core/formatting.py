"""How the book writes a number: every study, figure and sentence formats through here, so one kind of number
reads the same on every page. A :class:`Number` is a callable (value -> text), which is what a spread needs to
write its mean, min and max alike; the module's constants are the only number formats the library uses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Number", "CE", "COUNT", "DECIMAL1", "DECIMAL2", "DECIMAL3", "DECIMAL4", "PERCENT", "PERCENT1",
           "PERCENT_WHOLE", "SCIENTIFIC", "SETTING", "SIGNED_NATS", "SIGNED_PERCENT", "SIGNIFICANT", "TIMES",
           "WHOLE", "ratio", "counted", "listing", "seed_list", "occurrences", "readable"]


@dataclass(frozen=True)
class Number:
    """A number format: Python format ``spec`` of the value times ``scale``, then ``suffix``."""

    spec: str
    suffix: str = ""
    scale: float = 1.0

    def __call__(self, value: float) -> str:
        return f"{value * self.scale:{self.spec}}{self.suffix}"


DECIMAL1, DECIMAL2, DECIMAL3, DECIMAL4 = Number(".1f"), Number(".2f"), Number(".3f"), Number(".4f")
SIGNIFICANT = Number(".3g")  # a plain measurement with no natural unit
COUNT = SIGNIFICANT  # a mean count (heads, edges) over draws: 2, 2.33
CE = Number(".4g")  # a cross-entropy in nats
PERCENT, PERCENT1, PERCENT_WHOLE = Number(".2%"), Number(".1%"), Number(".0%")
SIGNED_PERCENT = Number("+.1f", " %")  # a change in percent of a reference: "+0.3 %"
SIGNED_NATS = Number("+.4f", " nats")  # a change of a CE: "-0.0108 nats"
TIMES = Number(".1f", "×")  # a ratio: "2.3×"
SCIENTIFIC = Number(".1e")
WHOLE = Number(".0f")  # a mean of whole things over draws (steps, seconds): "1050"
SETTING = Number("g")  # a setting as the reader gave it (a gate bias, a fixed β): 0, 0.1, 3, 1000


def ratio(value: float) -> str:
    """A ratio to two decimals below 10 and whole above: "1.37×", "38×"."""
    return f"{value:.2f}×" if value < 10 else f"{value:.0f}×"


def counted(n: int, noun: str) -> str:
    """``"1 head"``, ``"3 heads"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def listing(items: Sequence[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def seed_list(seeds: Iterable[int]) -> str:
    return ", ".join(str(s) for s in seeds)


def occurrences(count: int) -> str:
    """``"never"``, ``"once"``, ``"3 times"``."""
    return {0: "never", 1: "once"}.get(count, f"{count} times")



FEW_ROWS = 5  # a table with at most this many rows reads better turned (its rows become columns)
TABLE_COLUMNS = 6  # the most value columns a shown table has: more overflow the book's text column


def readable(frame, index: str | None = None, max_columns: int = TABLE_COLUMNS) -> list:
    """``frame`` as the tables a reader can read in the book's text column: column ``index`` (e.g. ``"seed"``) made
    the index, headers with spaces instead of underscores (so they wrap), turned when it has few rows (one column per
    seed or model), else split into tables of at most ``max_columns`` columns that each keep the index. The results
    file keeps the whole table."""
    if index is not None and index in frame.columns:
        frame = frame.set_index(index)
    shown = frame.rename(columns=lambda c: c.replace("_", " ") if isinstance(c, str) else c)
    for column in shown.columns[shown.dtypes == object]:  # a path or file name may wrap after each "/"
        shown[column] = shown[column].map(lambda v: v.replace("/", "/\u200b") if isinstance(v, str) else v)
    if len(shown) <= FEW_ROWS and len(shown.columns) > len(shown):
        shown = shown.T
    if len(shown.columns) <= max_columns:
        return [shown]
    return [shown.iloc[:, start:start + max_columns] for start in range(0, len(shown.columns), max_columns)]
