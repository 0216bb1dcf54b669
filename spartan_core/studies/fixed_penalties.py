"""Chapter 2's second question: is GECO better than a fixed penalty? :func:`penalties_over_seeds` runs GECO's
post-training loop with the multiplier held fixed (eta = 0) at each of several values, on each training seed's own
dense toy, and the functions below report, for every fixed penalty, in how many seeds it ended sparser than GECO and
at what held-out CE. GECO's own runs (:mod:`.training_dynamics`) are what each fixed penalty is compared with."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ..formatting import CE, PERCENT, SETTING, SIGNIFICANT, ratio
from .common import load_run
from .seeds import Seeds, Spread, table_cell
from .training_dynamics import GecoRun, PenaltyOutcome, _in_seeds

__all__ = ["Tradeoff", "RUN_NUMBERS", "compare_fixed_penalties", "penalties_over_seeds", "tradeoff_spreads",
           "tradeoff_spread_record", "wins", "tradeoff_table", "tradeoff_sentence"]


def _clause(count: int, total: int, yes: str, no: str | None = None) -> str:
    """``yes in 2 of 3 seeds``, ``yes in all 3 seeds``; with ``no`` (the opposite) none is ``no in all 3 seeds``."""
    if total == 1:
        return yes if count else (no or f"not: {yes}")
    if count == 0 and no is not None:
        return f"{no} {_in_seeds(total, total)}"
    return f"{yes} {_in_seeds(count, total)}"


RUN_NUMBERS = ("kept_fraction", "kept_per_query", "heldout_ce", "ce_ratio_to_geco")  # of each run, over seeds


@dataclass(frozen=True)
class Tradeoff:
    """One training seed's GECO model against runs of the same loop with the multiplier fixed at several values."""

    geco: PenaltyOutcome
    fixed: tuple[PenaltyOutcome, ...]
    seed: int = 0

    def ce_ratio(self, run: PenaltyOutcome) -> float:
        """A run's held-out CE as a multiple of GECO's."""
        return run.heldout_ce / self.geco.heldout_ce if self.geco.heldout_ce > 0 else math.inf

    def beats_geco(self) -> list[float]:
        """The fixed betas that ended sparser than GECO without a higher held-out CE."""
        return [run.beta for run in self.fixed
                if run.kept_fraction < self.geco.kept_fraction and run.heldout_ce <= self.geco.heldout_ce]

    def frame(self) -> pd.DataFrame:
        """One row per run (``run`` its label, ``method`` ``geco`` or ``fixed``), with each run's CE relative to
        GECO's and whether it beat GECO (sparser at no higher held-out CE)."""
        beating = self.beats_geco()
        return pd.DataFrame([{"run": run.label, "method": "geco" if run.beta is None else "fixed", "beta": run.beta,
                              "kept_fraction": run.kept_fraction, "kept_per_query": run.kept_per_query,
                              "heldout_ce": run.heldout_ce, "ce_ratio_to_geco": self.ce_ratio(run),
                              "sparser_than_geco": run.kept_fraction < self.geco.kept_fraction,
                              "beats_geco": run.beta in beating} for run in (self.geco, *self.fixed)])

    def row(self) -> dict:
        """Each run's :data:`RUN_NUMBERS`, keyed ``"<run label> <number>"``."""
        return {f"{run['run']} {key}": run[key] for run in self.frame().to_dict("records") for key in RUN_NUMBERS}


def compare_fixed_penalties(name: str, recipe: dict, betas, geco: GecoRun,
                            dense_steps: int | None = None) -> Tradeoff:
    """``recipe`` with eta = 0 and beta fixed at each of ``betas`` (an ordinary penalty), against ``geco``, on
    the same training seed as ``geco`` (the same dense toy)."""
    if not betas:
        raise ValueError("betas: need at least one fixed penalty to compare with GECO")
    fixed = [PenaltyOutcome.of(float(beta), load_run(name, {**recipe, "eta": 0.0, "beta_init": float(beta)}, geco.seed,
                                                     dense_steps).run.after) for beta in betas]
    return Tradeoff(geco=geco.outcome, fixed=tuple(fixed), seed=geco.seed)


def penalties_over_seeds(name: str, recipe: dict, betas, runs: Seeds[GecoRun],
                         dense_steps: int | None = None) -> Seeds[Tradeoff]:
    """:func:`compare_fixed_penalties` for each seed's GECO run of ``runs``, on that seed's own dense toy."""
    return Seeds(tuple(compare_fixed_penalties(name, recipe, betas, run, dense_steps) for run in runs.runs))


def _labels(tradeoffs: Seeds[Tradeoff]) -> list[str]:
    """GECO's and each fixed beta's label, the same in every seed."""
    betas = {tuple(run.beta for run in t.fixed) for t in tradeoffs.runs}
    if len(betas) != 1:
        raise ValueError(f"tradeoffs: every seed must compare the same fixed betas, got {sorted(betas)}")
    return [run.label for run in (tradeoffs.first.geco, *tradeoffs.first.fixed)]


def tradeoff_spreads(tradeoffs: Seeds[Tradeoff]) -> dict[str, dict[str, Spread]]:
    """Per run label: the spread over seeds of its kept fraction, keys per query, held-out CE and CE ÷ GECO's."""
    return {label: {key: tradeoffs.spread(f"{label} {key}") for key in RUN_NUMBERS} for label in _labels(tradeoffs)}


def tradeoff_spread_record(tradeoffs: Seeds[Tradeoff]) -> dict[str, dict[str, dict]]:
    return {label: {key: value.to_dict() for key, value in values.items()}
            for label, values in tradeoff_spreads(tradeoffs).items()}


def wins(tradeoffs: Seeds[Tradeoff]) -> pd.DataFrame:
    """Per fixed beta: in how many of the seeds it kept fewer edges than GECO, a held-out CE no higher than
    GECO's, and both (it beat GECO), and the seeds in which it beat GECO."""
    _labels(tradeoffs)
    rows = []
    for i, beta in enumerate(run.beta for run in tradeoffs.first.fixed):
        pairs = {t.seed: (t.geco, t.fixed[i]) for t in tradeoffs.runs}
        sparser = [seed for seed, (geco, run) in pairs.items() if run.kept_fraction < geco.kept_fraction]
        no_worse = [seed for seed, (geco, run) in pairs.items() if run.heldout_ce <= geco.heldout_ce]
        beating = [seed for seed in sparser if seed in no_worse]
        rows.append({"beta": beta, "seeds": len(tradeoffs), "sparser": len(sparser), "ce_no_higher": len(no_worse),
                     "beats_geco": len(beating), "beating_seeds": beating})
    return pd.DataFrame(rows)


def tradeoff_table(tradeoffs: Seeds[Tradeoff]) -> pd.DataFrame:
    """The comparison as displayed: each run's mean, with min-max over seeds, and its wins over GECO."""
    spread_of, beaten = tradeoff_spreads(tradeoffs), wins(tradeoffs)["beats_geco"].tolist()
    rows = [{"kept edges": table_cell(s["kept_fraction"], PERCENT),
             "keys per query": table_cell(s["kept_per_query"], SIGNIFICANT),
             "held-out CE": table_cell(s["heldout_ce"], CE), "CE ÷ GECO's": table_cell(s["ce_ratio_to_geco"], ratio),
             "beats GECO on both (seeds)": "" if i == 0 else f"{beaten[i - 1]} of {len(tradeoffs)}"}
            for i, s in enumerate(spread_of.values())]
    index = pd.Index(list(spread_of), name=f"run (mean, min–max over {len(tradeoffs)} seeds)")
    return pd.DataFrame(rows, index=index)


def tradeoff_sentence(tradeoffs: Seeds[Tradeoff]) -> str:
    """Per fixed penalty: in how many seeds it ended sparser than GECO, at what CE relative to GECO's, and both."""
    spread_of, n = tradeoff_spreads(tradeoffs), len(tradeoffs)
    geco, *fixed = spread_of.values()
    verdicts = []
    for s, (_, row) in zip(fixed, wins(tradeoffs).iterrows()):
        sparser = _clause(row["sparser"], n, "kept fewer edges than GECO", "kept no fewer edges than GECO")
        lower = _clause(row["ce_no_higher"], n, "a held-out CE no higher than GECO's",
                        "a higher held-out CE than GECO's")
        both = ("it does not beat GECO on both counts" if n == 1 and not row["beats_geco"] else
                _clause(row["beats_geco"], n, "it beats GECO on both counts"))
        verdicts.append(f"β = {SETTING(row['beta'])} {sparser} ({s['kept_fraction'].summary(PERCENT)} kept) and "
                        f"{lower} ({s['ce_ratio_to_geco'].summary(ratio)} GECO's): {both}")
    return (f"GECO kept {geco['kept_fraction'].summary(PERCENT)} of the edges at held-out CE "
            f"{geco['heldout_ce'].summary(CE)}. " + "; ".join(verdicts) + ".")
