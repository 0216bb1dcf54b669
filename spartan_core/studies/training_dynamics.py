"""Chapter 2's first question: how does GECO post-training behave? :func:`geco_over_seeds` reads each training
seed's post-trained copy of a model (:func:`geco_run`). The functions below report each number as a spread over the
seeds of a :class:`~.seeds.Seeds` and judge the chapter's two claims; the comparison with fixed penalties, the
chapter's second question, is in :mod:`.fixed_penalties`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ..claims import Claim
from ..formatting import (CE, COUNT, DECIMAL2, DECIMAL4, PERCENT, PERCENT1, SCIENTIFIC, SETTING, SIGNIFICANT, TIMES,
                          counted, occurrences, seed_list)
from ..training.evaluate import HeldOut
from ..training.posttrain import DENSE_CONTROL
from .common import load_run
from .seeds import Seeds, spread, table_cell

__all__ = ["GecoRun", "PenaltyOutcome", "HEADLINE", "geco_run", "geco_over_seeds", "spread_record",
           "per_seed_table", "summary_table", "geco_sentence", "training_dynamics_claim", "edges_kept_claim"]


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
                 "holds in every seed",
                 headline=f"{runs.first.model}: edge fraction {fall.short(TIMES)} lower, β "
                          f"{rise.short(SIGNIFICANT)}× its start, eval CE ≤ τ at "
                          f"{s['evals_meeting_tau'].short(COUNT)} of {len(runs.first.evals)} evaluations")


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
