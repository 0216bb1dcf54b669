"""Chapter 2's question: how does GECO post-training behave, and is it better than a fixed penalty?
:func:`geco_over_seeds` reads each training seed's post-trained copy of a model (:func:`geco_run`);
:func:`penalties_over_seeds` runs the same loop with the multiplier held fixed (eta = 0) at each of several values.
The functions below report each number as a spread over the seeds of a :class:`~.seeds.Seeds` (for every fixed
penalty, in how many seeds it ended sparser than GECO and at what held-out CE) and judge the chapter's two claims."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ..claims import Claim
from ..formatting import (CE, COUNT, DECIMAL2, DECIMAL4, PERCENT, PERCENT1, SCIENTIFIC, SETTING, SIGNIFICANT, TIMES,
                          counted, occurrences, ratio, seed_list)
from ..training.evaluate import HeldOut
from ..training.posttrain import DENSE_CONTROL
from .common import load_run
from .seeds import Seeds, Spread, spread, table_cell

__all__ = ["GecoRun", "PenaltyOutcome", "Tradeoff", "HEADLINE", "geco_run", "geco_over_seeds", "spread_record",
           "per_seed_table", "summary_table", "geco_sentence", "training_dynamics_claim", "edges_kept_claim",
           "RUN_NUMBERS", "compare_fixed_penalties", "penalties_over_seeds", "tradeoff_spreads",
           "tradeoff_spread_record", "wins", "tradeoff_table", "tradeoff_sentence"]


@dataclass(frozen=True)
class PenaltyOutcome:
    """Where one post-training run ended on held-out data; ``beta`` is None for GECO (it chooses beta itself)."""

    beta: float | None
    kept_fraction: float
    kept_per_query: float
    heldout_ce: float

    @classmethod
    def of(cls, beta: float | None, after: HeldOut) -> "PenaltyOutcome":
        return cls(beta, after.kept_fraction, after.kept_per_query, after.ce)

    @property
    def label(self) -> str:
        return "GECO" if self.beta is None else f"fixed β = {SETTING(self.beta)}"


@dataclass(frozen=True)
class GecoRun:
    """One training seed's GECO post-training run: per-step ``history``, ``evals``, final held-out numbers."""

    model: str
    history: pd.DataFrame
    evals: pd.DataFrame
    tau: float
    tau_reference: str
    beta_min: float
    dense_train_ce: float
    dense_heldout_ce: float
    heldout_split: str
    best_step: int | None
    train_wall_time_s: float
    outcome: PenaltyOutcome
    dense_exact_match: float | None = None
    sparse_exact_match: float | None = None
    seed: int = 0
    control: HeldOut | None = None  # the compute-matched control's held-out numbers, where loaded

    @property
    def geco_phase(self) -> pd.DataFrame:
        return self.history[self.history["phase"] == "geco"]

    @property
    def steps(self) -> int:
        return len(self.geco_phase)

    @property
    def beta_max(self) -> float:
        phase = self.geco_phase
        return float(max(phase["beta_used"].max(), phase["beta"].max()))

    @property
    def beta_collapses(self) -> int:
        """How often beta fell back onto its lower clamp after having left it."""
        at_clamp = self.geco_phase["log_beta"] <= math.log(self.beta_min) + 1e-9
        return int((at_clamp & ~at_clamp.shift(fill_value=True)).sum())

    @property
    def sparsity_fall(self) -> float:
        """How many times smaller the expected edge fraction ended than it started."""
        fraction = self.geco_phase["expected_fraction"]
        return float(fraction.iloc[0] / fraction.iloc[-1])

    @property
    def beta_rise(self) -> float:
        """β's highest value as a multiple of its first."""
        return self.beta_max / float(self.geco_phase["beta_used"].iloc[0])

    @property
    def unrecovered_collapse(self) -> bool:
        """Whether β ended on its lower clamp after having left it, in a stretch that began before the last tenth
        of the run (a violation it had time to recover from and did not)."""
        phase = self.geco_phase
        at_clamp = (phase["log_beta"] <= math.log(self.beta_min) + 1e-9).to_numpy()
        if not at_clamp[-1] or at_clamp.all():
            return False
        stretch_start = len(at_clamp) - int(at_clamp[::-1].argmin())
        return stretch_start < 0.9 * len(at_clamp)

    @property
    def evals_meeting_tau(self) -> int:
        return int((self.evals["eval_ce"] <= self.tau).sum())

    def row(self) -> dict:
        """The run's numbers (the seed's row of metrics.json's ``per_seed``)."""
        phase = self.geco_phase
        values = {
            "model": self.model, "steps": self.steps, "tau": self.tau, "tau_reference": self.tau_reference,
            "dense_train_ce": self.dense_train_ce, "dense_heldout_ce": self.dense_heldout_ce,
            "sparse_heldout_ce": self.outcome.heldout_ce, "heldout_split": self.heldout_split,
            "kept_fraction": self.outcome.kept_fraction, "kept_per_query": self.outcome.kept_per_query,
            "expected_fraction_first": float(phase["expected_fraction"].iloc[0]),
            "expected_fraction_last": float(phase["expected_fraction"].iloc[-1]),
            "beta_first": float(phase["beta_used"].iloc[0]), "beta_max": self.beta_max,
            "beta_last": float(phase["beta"].iloc[-1]), "beta_collapses": self.beta_collapses,
            "evals_meeting_tau": self.evals_meeting_tau, "evals": len(self.evals), "best_step": self.best_step,
            "train_wall_time_s": self.train_wall_time_s,
        }
        if self.sparse_exact_match is not None:
            values.update(dense_exact_match=self.dense_exact_match, sparse_exact_match=self.sparse_exact_match)
        if self.control is not None:
            values["control_heldout_ce"] = self.control.ce
            if self.control.exact_match is not None:
                values["control_exact_match"] = self.control.exact_match_all
        return values


def geco_run(name: str, recipe: dict, dense_steps: int | None = None, seed: int = 0,
             dense_seed: int | None = None, control: bool = False) -> GecoRun:
    """The sparse post-trained copy of ``name`` under ``recipe`` (over the model's default) for training seed
    ``seed`` (a toy's pretraining and the post-training both use it, unless ``dense_seed`` names the dense
    model's own), read as a run; with ``control``, beside its compute-matched control's held-out numbers."""
    loaded = load_run(name, recipe, seed, dense_steps, dense_seed)
    run = loaded.run
    matched = load_run(name, {**recipe, "policy": DENSE_CONTROL}, seed, dense_steps, dense_seed) if control else None
    return GecoRun(model=name, history=pd.DataFrame(run.history), evals=pd.DataFrame(run.evals), tau=run.tau,
                   tau_reference=run.tau_reference, beta_min=run.recipe.beta_min, dense_train_ce=run.dense_train_ce,
                   dense_heldout_ce=run.dense.ce, heldout_split=loaded.info["heldout_split"],
                   best_step=run.best_step, train_wall_time_s=run.wall_time_s,
                   outcome=PenaltyOutcome.of(None, run.after), dense_exact_match=run.dense.exact_match_all,
                   sparse_exact_match=run.after.exact_match_all, seed=seed,
                   control=matched.run.after if matched is not None else None)


def geco_over_seeds(name: str, recipe: dict, seeds, dense_steps: int | None = None) -> Seeds[GecoRun]:
    """:func:`geco_run` for every training seed of ``seeds`` (each its own dense toy, sparse copy and
    compute-matched control)."""
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: need each training seed once, and at least one, got {seeds}")
    return Seeds.measure(seeds, lambda seed: geco_run(name, recipe, dense_steps=dense_steps, seed=seed, control=True))


# The headline numbers of a GECO run that the chapter reports over seeds (keys of GecoRun.row()).
HEADLINE = ("kept_fraction", "kept_per_query", "sparse_heldout_ce", "dense_heldout_ce", "control_heldout_ce",
            "control_exact_match", "dense_train_ce", "tau",
            "expected_fraction_first", "expected_fraction_last", "beta_first", "beta_max", "beta_last",
            "beta_collapses", "evals_meeting_tau", "dense_exact_match", "sparse_exact_match", "train_wall_time_s")


def spread_record(runs: Seeds[GecoRun]) -> dict[str, dict]:
    """Mean and min-max over seeds of every headline number (:data:`HEADLINE`) the runs have, for metrics.json."""
    return runs.spread_record(HEADLINE)


def per_seed_table(runs: Seeds[GecoRun]) -> pd.DataFrame:
    """The headline numbers of each seed's run, as displayed (one row per training seed)."""
    frame = runs.per_seed().set_index("seed")
    columns = {"kept_fraction": "kept edges (%)", "kept_per_query": "keys per query",
               "sparse_heldout_ce": "held-out CE", "dense_heldout_ce": "dense held-out CE", "tau": "τ",
               "beta_max": "β max", "beta_collapses": "β collapses", "evals_meeting_tau": "evals ≤ τ",
               "best_step": "kept step", "sparse_exact_match": "exact match (%)",
               "train_wall_time_s": "train time (s)"}
    table = frame[[c for c in columns if c in frame]].rename(columns=columns)
    for column in ("kept edges (%)", "exact match (%)"):
        if column in table:
            table[column] = 100 * table[column]
    table.index.name = "training seed"
    return table


def summary_table(runs: Seeds[GecoRun]) -> pd.DataFrame:
    """The dense checkpoint, its compute-matched control (where loaded) and the sparse model, as displayed: each
    number's mean with its min-max over seeds."""
    s = runs.spreads(HEADLINE)
    kinds = ["dense", "control", "sparse"] if "control_heldout_ce" in s else ["dense", "sparse"]
    rows = {f"held-out CE ({runs.first.heldout_split} split)":
            [table_cell(s[f"{kind}_heldout_ce"], CE) for kind in kinds],
            "kept edges": [PERCENT(1.0)] * (len(kinds) - 1) + [table_cell(s["kept_fraction"], PERCENT)]}
    if "sparse_exact_match" in s:
        rows["exact match"] = [table_cell(s.get(f"{kind}_exact_match"), PERCENT) for kind in kinds]
    labels = {"dense": "dense checkpoint", "control": "control (same steps, no gate)", "sparse": "sparse (GECO)"}
    return pd.DataFrame(list(rows.values()), columns=[labels[kind] for kind in kinds],
                        index=pd.Index(list(rows), name=f"mean (min–max over {len(runs)} seeds)"))


def _in_seeds(count: int, total: int) -> str:
    """``in all 3 seeds`` / ``in 2 of 3 seeds`` / ``in none of the 3 seeds`` (two: ``in both`` / ``in neither``)."""
    if count == total:
        return "in both seeds" if total == 2 else f"in all {total} seeds"
    if count == 0:
        return "in neither seed" if total == 2 else f"in none of the {total} seeds"
    return f"in {count} of {total} seeds"


def _clause(count: int, total: int, yes: str, no: str | None = None) -> str:
    """``yes in 2 of 3 seeds``, ``yes in all 3 seeds``; with ``no`` (the opposite) none is ``no in all 3 seeds``."""
    if total == 1:
        return yes if count else (no or f"not: {yes}")
    if count == 0 and no is not None:
        return f"{no} {_in_seeds(total, total)}"
    return f"{yes} {_in_seeds(count, total)}"


def geco_sentence(runs: Seeds[GecoRun]) -> str:
    """What the runs did, for the chapter's reader."""
    s, n = runs.spreads(HEADLINE), len(runs)
    collapses = s["beta_collapses"]
    if collapses.high == 0:
        fell = "never fell back onto its lower clamp"
    elif n == 1:
        fell = f"{occurrences(int(collapses.mean))} fell back onto its lower clamp"
    else:
        fell = (f"fell back onto its lower clamp {collapses.summary(COUNT)} times per run "
                f"({_in_seeds(sum(v > 0 for v in collapses.values), n)} at least once)")
    steps = ", ".join("none" if run.best_step is None else str(run.best_step) for run in runs.runs)
    if all(run.best_step is None for run in runs.runs):
        kept = ""
    elif n == 1:
        kept = f" The kept checkpoint is step {steps}."
    else:
        kept = f" The kept checkpoints are at steps {steps} (seeds {seed_list(runs.seeds)})."
    return (f"Over {counted(n, 'training seed')}, the expected edge fraction fell from "
            f"{s['expected_fraction_first'].summary(DECIMAL4)} to {s['expected_fraction_last'].summary(DECIMAL4)} "
            f"while β rose from {s['beta_first'].summary(SCIENTIFIC)} to at most {s['beta_max'].summary(SCIENTIFIC)}; "
            f"β {fell}, and the evaluation CE met τ = {s['tau'].summary(DECIMAL4)} at "
            f"{s['evals_meeting_tau'].summary(COUNT)} of {len(runs.first.evals)} evaluations.{kept}")


SPARSITY_FALL = 10.0  # the expected edge fraction must end at least this many times below where it started
BETA_RISE = 10.0  # and β must rise at least this many times above its start


def training_dynamics_claim(runs: Seeds[GecoRun]) -> Claim:
    """The training-dynamics row of the claims table, judged on the shape of the paper's figure rather than on β's
    scale (which depends on the clamp and on how the CE is normalised): sparsity falls, β rises while the CE
    meets τ, and β recovers after a violation."""
    s, n = runs.spreads(HEADLINE), len(runs)
    fall = spread(run.sparsity_fall for run in runs.runs)
    rise = spread(run.beta_rise for run in runs.runs)
    never_met = [run.seed for run in runs.runs if run.best_step is None]
    unrecovered = [run.seed for run in runs.runs if run.unrecovered_collapse]
    sentence = (f"{runs.first.model}, {runs.first.steps} steps, {counted(n, 'seed')}: expected edge "
                f"fraction {s['expected_fraction_first'].summary(DECIMAL4)} → "
                f"{s['expected_fraction_last'].summary(DECIMAL4)}, {fall.summary(TIMES)} lower; β rose to "
                f"{rise.summary(SIGNIFICANT)} times its start (max {s['beta_max'].summary(SCIENTIFIC)}), falling "
                f"back to its lower clamp {s['beta_collapses'].summary(COUNT)} times; eval CE ≤ τ at "
                f"{s['evals_meeting_tau'].summary(COUNT)} of {len(runs.first.evals)} evaluations")
    if unrecovered:
        sentence += f"; β ended on its clamp without recovering in seeds {seed_list(unrecovered)}"
    falls = fall.low >= SPARSITY_FALL
    shape = falls and rise.low >= BETA_RISE and not never_met and not unrecovered
    verdict = "reproduced" if shape else "partly" if falls else "not reproduced"
    values = {"seeds": runs.seeds, "sparsity_fall": fall.to_dict(), "beta_rise": rise.to_dict(),
              "beta_max": s["beta_max"].to_dict(), "beta_collapses": s["beta_collapses"].to_dict(),
              "expected_fraction_last": s["expected_fraction_last"].to_dict(), "seeds_never_meeting_tau": never_met,
              "seeds_not_recovered": unrecovered}
    return Claim("training_dynamics", sentence, values, verdict,
                 f"reproduced when, in every seed, the expected edge fraction falls ≥ {SPARSITY_FALL:.0f}×, β rises "
                 f"≥ {BETA_RISE:.0f}× above its start, an evaluation meets τ and β leaves its lower clamp again "
                 "after every violation (one in the last tenth of the run excepted); partly when only the fall "
                 "holds in every seed")


def edges_kept_claim(runs: Seeds[GecoRun]) -> Claim:
    """Chapter 2's evidence for claim ``edges_kept`` (the edges GECO kept and the held-out CE it kept them at, beside
    the compute-matched control's), which chapter 3 judges over every post-trained model: no verdict of its own."""
    s = runs.spreads(HEADLINE)
    kept, ce = s["kept_fraction"], s["sparse_heldout_ce"]
    reference = "control" if "control_heldout_ce" in s else "dense"
    sentence = (f"{runs.first.model}: {kept.summary(PERCENT)} of attention edges kept "
                f"({s['kept_per_query'].summary(DECIMAL2)} keys per query), held-out CE {ce.summary(DECIMAL4)} vs "
                f"{s[f'{reference}_heldout_ce'].summary(DECIMAL4)} for its "
                f"{'compute-matched control' if reference == 'control' else 'dense checkpoint'}")
    if "sparse_exact_match" in s:
        sentence += (f"; exact match {s['sparse_exact_match'].summary(PERCENT1)} vs "
                     f"{s[f'{reference}_exact_match'].summary(PERCENT1)}")
    values = {"seeds": runs.seeds, "kept_fraction": kept.to_dict(), "heldout_ce": ce.to_dict(),
              f"{reference}_heldout_ce": s[f"{reference}_heldout_ce"].to_dict()}
    return Claim("edges_kept", sentence, values)


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
