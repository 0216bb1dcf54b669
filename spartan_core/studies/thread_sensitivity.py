"""How far another CPU thread count moves chapter 3's numbers: one training seed post-trained again at another torch
thread count, against the same seed at the recipe's count and the spread over the study's training seeds."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..formatting import CE, PERCENT, PERCENT1, counted, listing
from .common import Unavailable
from .edges_and_loss import ROW_NUMBERS, EdgesAndLoss, EdgesStudy, measure_model
from .model_cards import EdgeSettings
from .seeds import Seeds, Spread

__all__ = ["NUMBERS", "ThreadCheck", "thread_check"]

# What the thread check compares: (row number, label, format).
NUMBERS = (("dense_ce", "dense held-out CE", CE), ("sparse_kept_fraction", "sparse kept edges", PERCENT),
           ("sparse_ce", "sparse held-out CE", CE), ("sparse_exact_match", "sparse exact match", PERCENT1))
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
    def weights_differ(self) -> dict[str, bool | None]:
        """Per kind (dense, sparse): whether the two models' weights differ (None where either is not hashed)."""
        hashes = {kind: (getattr(self.reference, f"{kind}_sha256"), getattr(self.retrained, f"{kind}_sha256"))
                  for kind in ("dense", "sparse")}
        return {kind: None if None in pair else pair[0] != pair[1] for kind, pair in hashes.items()}

    def compared(self) -> pd.DataFrame:
        """Per compared number: its value at the recipe's threads (``reference``) and at ``threads``, the change,
        the seeds' min, max and range (max - min), and whether the change is within that range."""
        reference, retrained, rows = self.reference.row(), self.retrained.row(), []
        for key, label, _ in NUMBERS:
            if key in reference and key in retrained and key in self.seeds:
                s, change = self.seeds[key], retrained[key] - reference[key]
                rows.append([label, key, reference[key], retrained[key], change, s.low, s.high, s.high - s.low, s.n,
                             abs(change) <= s.high - s.low])
        return pd.DataFrame(rows, columns=_COLUMNS).set_index("number")

    def table(self) -> pd.DataFrame:
        return self.compared().drop(columns=["key"]).rename(columns={
            "reference": f"seed {self.seed}, {_threads(self.reference.threads)}",
            "retrained": f"seed {self.seed}, {_threads(self.threads)}"})

    @property
    def within_seed_spread(self) -> bool | None:
        """Whether every compared change is within the range the training seeds span (None with one seed)."""
        compared = self.compared()
        if compared.empty or compared["seeds"].iloc[0] < 2:
            return None
        return bool(compared["within seed spread"].all())

    def to_record(self) -> dict:
        hashes = {f"{kind}_sha256": {"reference": getattr(self.reference, f"{kind}_sha256"),
                                     "retrained": getattr(self.retrained, f"{kind}_sha256")}
                  for kind in ("dense", "sparse")}
        return {"model": self.model, "seed": self.seed, "threads": self.threads,
                "reference_threads": self.reference.threads, "weights_differ": self.weights_differ, **hashes,
                "within_seed_spread": self.within_seed_spread,
                "compared": self.compared().reset_index().to_dict("records")}

    @property
    def sentence(self) -> str:
        differ, at, at_ref = self.weights_differ, _threads(self.threads), _threads(self.reference.threads)
        text = f"Retrained with {at} instead of {at_ref}, training seed {self.seed} of {self.model} " + (
            "could not be compared weight by weight (its weights are not hashed). " if differ["sparse"] is None else
            "is the same model: its dense and sparse weights have the same SHA-256. " if not any(differ.values()) else
            f"is another model: its {' and '.join(k for k in differ if differ[k])} weights differ (sparse SHA-256 "
            f"{self.reference.sparse_sha256[:12]} with {at_ref}, {self.retrained.sparse_sha256[:12]} with {at}). ")
        fmt = {key: fmt for key, _, fmt in NUMBERS}
        rows = [(label, row, fmt[row["key"]]) for label, row in self.compared().iterrows()]
        text += f"With {at}: " + "; ".join(f"{label} {f(row['retrained'])} ({f(row['reference'])} with {at_ref})"
                                           for label, row, f in rows) + "."
        if rows and all(row["change"] == 0 for _, row, _ in rows) and any(differ.values()):
            text += (" The numbers are the same to every digit stored: the weights differ only in bits too small to "
                     "move them.")
        n = int(rows[0][1]["seeds"]) if rows else 0
        outside = [(label, row, f) for label, row, f in rows if not row["within seed spread"]]
        if n < 2:
            return text + " With a single training seed there is no seed spread to compare the change with."
        chance = (f" This is one retrained draw: a fresh seed lands outside the range of {n} others with probability "
                  f"2/{n + 1} by chance alone, so one draw against the range of {n} is no evidence either way of "
                  f"whether the thread count moves the numbers more or less than the seed does.")
        if not outside:
            return text + (f" Every change is within the spread over the {n} training seeds (no larger than the "
                           f"seeds' max − min).{chance}")
        inside = [label for label, row, _ in rows if row["within seed spread"]]
        ranges = "; ".join(f"{label}: {f(abs(row['change']))} against a seed range of {f(row['seeds range'])}"
                           for label, row, f in outside)
        kept = f" ({listing(inside)} within it)" if inside else ""
        return text + (f" The change is larger than the spread over the {n} training seeds for "
                       f"{listing([label for label, _, _ in outside])}{kept} ({ranges}).{chance}")


def thread_check(models: EdgesStudy, name: str, threads: int, *, seed: int | None = None,
                 settings: EdgeSettings = EdgeSettings()) -> ThreadCheck | Unavailable:
    """Post-train ``name`` for ``seed`` (default: the study's first) at ``threads`` torch CPU threads and compare
    it with the same seed at the recipe's threads (the study's row, else measured here) and the seeds' spread."""
    seed = models.seeds[0] if seed is None else seed
    rows = [row for row in models.measured[name].runs if row.post_trained] if name in models.measured else []
    reference = next((row for row in rows if row.seed == seed), None)
    if reference is None:
        _, reference = measure_model(name, post_train=True, seed=seed, settings=settings, card=False)
    _, retrained = measure_model(name, post_train=True, seed=seed, threads=threads, settings=settings, card=False)
    pending = next((row for row in (reference, retrained) if not row.measured), None)
    if pending is not None:
        return Unavailable(name, pending.reason)
    seeds = Seeds(tuple(rows or [reference])).spreads(ROW_NUMBERS)
    return ThreadCheck(model=name, seed=seed, threads=threads, reference=reference, retrained=retrained,
                       seeds={key: seeds[key] for key, _, _ in NUMBERS if key in seeds})
