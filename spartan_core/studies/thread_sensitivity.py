"""How far another CPU thread count moves chapter 3's numbers: :func:`thread_check` post-trains one training seed
of a model again at another torch thread count and compares it with the same seed at the recipe's thread count
and with the spread over the study's training seeds (:class:`ThreadCheck`)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..formatting import CE, PERCENT, PERCENT1, counted, listing
from .common import Unavailable
from .edges_and_loss import EdgeSettings, EdgesAndLoss, EdgesStudy, measure_model, spreads
from .seeds import Seeds, Spread

__all__ = ["NUMBERS", "ThreadCheck", "thread_check"]

# What the thread check compares: (row number, label, format).
NUMBERS = (("dense_ce", "dense held-out CE", CE), ("sparse_kept_fraction", "sparse kept edges", PERCENT),
           ("sparse_ce", "sparse held-out CE", CE), ("sparse_exact_match", "sparse exact match", PERCENT1))
_FORMAT = {key: fmt for key, _, fmt in NUMBERS}
_COLUMNS = ["number", "key", "reference", "retrained", "change", "seeds min", "seeds max", "seeds range", "seeds",
            "within seed spread"]


def _threads(threads: int | None) -> str:
    return "the recipe's threads" if threads is None else counted(threads, "thread")


@dataclass(frozen=True)
class ThreadCheck:
    """One training seed of a model retrained at ``threads`` CPU threads (``retrained``), against the same seed at
    the recipe's thread count (``reference``) and against the spread over the study's training seeds (``seeds``)."""

    model: str
    seed: int
    threads: int
    reference: EdgesAndLoss
    retrained: EdgesAndLoss
    seeds: dict[str, Spread]

    @property
    def reference_threads(self) -> int | None:
        return self.reference.threads

    @property
    def weights_differ(self) -> dict[str, bool | None]:
        """Per kind (dense, sparse): whether the two models' weights differ (None where either is not hashed)."""
        hashes = {kind: (getattr(self.reference, f"{kind}_sha256"), getattr(self.retrained, f"{kind}_sha256"))
                  for kind in ("dense", "sparse")}
        return {kind: None if None in pair else pair[0] != pair[1] for kind, pair in hashes.items()}

    def compared(self) -> pd.DataFrame:
        """One row per compared number: the value at the recipe's threads (``reference``) and at ``threads``
        (``retrained``), the change, the seeds' min, max and range (max - min), and whether the change is within
        that range."""
        reference, retrained, rows = self.reference.row(), self.retrained.row(), []
        for key, label, _ in NUMBERS:
            if key in reference and key in retrained and key in self.seeds:
                s, change = self.seeds[key], retrained[key] - reference[key]
                rows.append([label, key, reference[key], retrained[key], change, s.low, s.high, s.high - s.low, s.n,
                             abs(change) <= s.high - s.low])
        return pd.DataFrame(rows, columns=_COLUMNS).set_index("number")

    def table(self) -> pd.DataFrame:
        """:meth:`compared` as displayed, its columns naming the thread counts."""
        return self.compared().drop(columns=["key"]).rename(columns={
            "reference": f"seed {self.seed}, {_threads(self.reference_threads)}",
            "retrained": f"seed {self.seed}, {_threads(self.threads)}"})

    @property
    def within_seed_spread(self) -> bool | None:
        """Whether every compared change is within the range the training seeds span (None with one seed)."""
        compared = self.compared()
        if compared.empty or int(compared["seeds"].iloc[0]) < 2:
            return None
        return bool(compared["within seed spread"].all())

    def to_record(self) -> dict:
        return {"model": self.model, "seed": self.seed, "threads": self.threads,
                "reference_threads": self.reference_threads, "weights_differ": self.weights_differ,
                **{f"{kind}_sha256": {"reference": getattr(self.reference, f"{kind}_sha256"),
                                      "retrained": getattr(self.retrained, f"{kind}_sha256")}
                   for kind in ("dense", "sparse")},
                "within_seed_spread": self.within_seed_spread,
                "compared": self.compared().reset_index().to_dict("records")}

    @property
    def sentence(self) -> str:
        differ, at, at_ref = self.weights_differ, _threads(self.threads), _threads(self.reference_threads)
        text = f"Retrained with {at} instead of {at_ref}, training seed {self.seed} of {self.model} "
        if differ["sparse"] is None:
            text += "could not be compared weight by weight (its weights are not hashed). "
        elif not any(differ.values()):
            text += "is the same model: its dense and sparse weights have the same SHA-256. "
        else:
            which = " and ".join(kind for kind in ("dense", "sparse") if differ[kind])
            text += (f"is another model: its {which} weights differ (sparse SHA-256 {self.reference.sparse_sha256[:12]}"
                     f" with {at_ref}, {self.retrained.sparse_sha256[:12]} with {at}). ")
        compared = self.compared()
        rows = [(label, row, _FORMAT[row["key"]]) for label, row in compared.iterrows()]
        text += f"With {at}: " + "; ".join(f"{label} {fmt(row['retrained'])} ({fmt(row['reference'])} with {at_ref})"
                                           for label, row, fmt in rows) + "."
        if rows and (compared["change"] == 0).all() and any(differ.values()):
            text += (" The numbers are the same to every digit stored: the weights differ only in bits too small to "
                     "move them.")
        n = int(compared["seeds"].iloc[0]) if rows else 0
        if n < 2:
            return text + " With a single training seed there is no seed spread to compare the change with."
        outside = [(label, row, fmt) for label, row, fmt in rows if not row["within seed spread"]]
        if not outside:
            return text + (f" Every change is within the spread over the {n} training seeds (no larger than the seeds'"
                           f" max − min): here another thread count moves the numbers no more than another seed does.")
        inside = [label for label, row, _ in rows if row["within seed spread"]]
        ranges = "; ".join(f"{label}: {fmt(abs(row['change']))} against a seed range of {fmt(row['seeds range'])}"
                           for label, row, fmt in outside)
        kept = f" ({listing(inside)} within it)" if inside else ""
        return text + (f" The change is larger than the spread over the {n} training seeds for "
                       f"{listing([label for label, _, _ in outside])}{kept} ({ranges}): there, another thread count "
                       f"moves the numbers more than another seed does.")


def thread_check(models: EdgesStudy, name: str, threads: int, *, seed: int | None = None,
                 settings: EdgeSettings = EdgeSettings()) -> ThreadCheck | Unavailable:
    """Post-train ``name`` for ``seed`` (default: the study's first training seed) at ``threads`` torch CPU
    threads and compare it with the same seed at the recipe's thread count (the study's row, measured here if
    the study lacks it) and with the spread over the study's seeds."""
    seed = models.seeds[0] if seed is None else seed
    reference = models.row(name, seed)
    if reference is None or not reference.post_trained:
        _, reference = measure_model(name, post_train=True, seed=seed, settings=settings, card=False)
    _, retrained = measure_model(name, post_train=True, seed=seed, threads=threads, settings=settings, card=False)
    pending = next((row for row in (reference, retrained) if not row.measured), None)
    if pending is not None:
        return Unavailable(name, pending.reason)
    rows = [row for row in models.measured[name].runs if row.post_trained] if name in models.measured else []
    seeds = spreads(Seeds(tuple(rows or [reference])))
    return ThreadCheck(model=name, seed=seed, threads=threads, reference=reference, retrained=retrained,
                       seeds={key: seeds[key] for key, _, _ in NUMBERS if key in seeds})
