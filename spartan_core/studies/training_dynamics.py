"""Chapter 2's question: how does GECO post-training behave, and is it better than a fixed penalty?

:func:`geco_run` loads (trains on first use) a model's sparse post-trained copy and reads its logged run;
:func:`compare_fixed_penalties` runs the same loop with the multiplier held fixed (eta = 0) at each of several
values. Both say what they show in sentences generated from their numbers: for every fixed penalty, whether it
ended sparser than GECO and at what held-out CE relative to GECO's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from .. import zoo
from .common import pretrain_overrides

__all__ = ["GecoRun", "PenaltyOutcome", "Tradeoff", "geco_run", "compare_fixed_penalties"]


@dataclass
class PenaltyOutcome:
    """Where one post-training run ended on held-out data; ``beta`` is None for GECO (it chooses beta itself)."""

    beta: float | None
    kept_fraction: float
    kept_per_query: float
    heldout_ce: float


@dataclass
class GecoRun:
    """One GECO post-training run: its per-step ``history`` and ``evals`` and the final held-out numbers."""

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

    @property
    def geco_phase(self) -> pd.DataFrame:
        return self.history[self.history["phase"] == "geco"]

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
    def evals_meeting_tau(self) -> int:
        return int((self.evals["eval_ce"] <= self.tau).sum())

    def metrics(self) -> dict:
        phase = self.geco_phase
        values = {
            "model": self.model, "steps": len(phase), "tau": self.tau, "tau_reference": self.tau_reference,
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
        return values

    def summary(self) -> pd.DataFrame:
        """Dense against sparse, as displayed."""
        return pd.DataFrame({"dense": [self.dense_heldout_ce, 1.0],
                             "sparse (GECO)": [self.outcome.heldout_ce, self.outcome.kept_fraction]},
                            index=[f"held-out CE ({self.heldout_split} split)", "kept edge fraction"])

    @property
    def dynamics_sentence(self) -> str:
        """The training-dynamics row of the claims table."""
        m = self.metrics()
        return (f"{self.model}, {m['steps']} steps: expected edge fraction {m['expected_fraction_first']:.3f} → "
                f"{m['expected_fraction_last']:.4f}; β {m['beta_first']:.1e} → max {m['beta_max']:.1e}, "
                f"falling back to its lower clamp {m['beta_collapses']} times; eval CE ≤ τ at "
                f"{m['evals_meeting_tau']} of {m['evals']} evaluations")

    @property
    def kept_sentence(self) -> str:
        """The edges-kept row of the claims table."""
        text = (f"{self.model}: {self.outcome.kept_fraction:.2%} of attention edges kept "
                f"({self.outcome.kept_per_query:.2f} keys per query), held-out CE {self.outcome.heldout_ce:.4f} "
                f"vs dense {self.dense_heldout_ce:.4f}")
        if self.sparse_exact_match is not None:
            text += f"; exact match {self.sparse_exact_match:.1%} (dense {self.dense_exact_match:.1%})"
        return text

    @property
    def sentence(self) -> str:
        """What the run did, for the chapter's reader."""
        m = self.metrics()
        best = "" if self.best_step is None else f" The kept checkpoint is step {self.best_step}."
        return (f"The expected edge fraction fell from {m['expected_fraction_first']:.3f} to "
                f"{m['expected_fraction_last']:.4f} while β rose from {m['beta_first']:.1e} to at most "
                f"{m['beta_max']:.1e}; β {_times(m['beta_collapses'])} fell back onto its lower clamp, and the "
                f"evaluation CE met τ = {self.tau:.4f} at {m['evals_meeting_tau']} of {m['evals']} evaluations.{best}")


def _times(count: int) -> str:
    return {0: "never", 1: "once"}.get(count, f"{count} times")


@dataclass
class Tradeoff:
    """GECO's final model against runs of the same loop with the multiplier fixed at each of several values."""

    geco: PenaltyOutcome
    fixed: list[PenaltyOutcome]

    def ce_ratio(self, run: PenaltyOutcome) -> float:
        """A run's held-out CE as a multiple of GECO's."""
        return run.heldout_ce / self.geco.heldout_ce if self.geco.heldout_ce > 0 else math.inf

    def frame(self) -> pd.DataFrame:
        """One row per run (``method`` ``geco`` or ``fixed``), with each run's CE relative to GECO's."""
        rows = [{"method": "geco" if run.beta is None else "fixed", "beta": run.beta,
                 "kept_fraction": run.kept_fraction, "kept_per_query": run.kept_per_query,
                 "heldout_ce": run.heldout_ce, "ce_ratio_to_geco": self.ce_ratio(run),
                 "sparser_than_geco": run.kept_fraction < self.geco.kept_fraction}
                for run in [self.geco, *self.fixed]]
        return pd.DataFrame(rows)

    def table(self) -> pd.DataFrame:
        """The comparison as displayed."""
        runs = [self.geco, *self.fixed]
        return pd.DataFrame({"kept edges (%)": [100 * run.kept_fraction for run in runs],
                             "keys per query": [run.kept_per_query for run in runs],
                             "held-out CE": [run.heldout_ce for run in runs],
                             "CE ÷ GECO's": [self.ce_ratio(run) for run in runs]},
                            index=pd.Index(["GECO" if run.beta is None else f"fixed β = {run.beta:g}"
                                            for run in runs], name="run"))

    def beats_geco(self) -> list[float]:
        """The fixed betas that ended sparser than GECO without a higher held-out CE."""
        return [run.beta for run in self.fixed
                if run.kept_fraction < self.geco.kept_fraction and run.heldout_ce <= self.geco.heldout_ce]

    def _verdict(self, run: PenaltyOutcome) -> str:
        ratio = self.ce_ratio(run)
        sparser = run.kept_fraction < self.geco.kept_fraction
        edges = f"{'fewer' if sparser else 'more'} edges than GECO ({run.kept_fraction:.2%} kept)"
        if sparser and ratio <= 1:
            return f"β = {run.beta:g} kept {edges} at {ratio:.2g}× GECO's held-out CE: it beats GECO on both"
        if sparser:
            return f"β = {run.beta:g} kept {edges}, but at {ratio:.2g}× GECO's held-out CE"
        if ratio < 1:
            return f"β = {run.beta:g} kept {edges} at a lower held-out CE ({ratio:.2g}× GECO's)"
        return f"β = {run.beta:g} kept {edges} at {ratio:.2g}× GECO's held-out CE: GECO is better on both"

    @property
    def sentence(self) -> str:
        return (f"GECO kept {self.geco.kept_fraction:.2%} of the edges at held-out CE {self.geco.heldout_ce:.2g}. "
                + "; ".join(self._verdict(run) for run in self.fixed) + ".")


def geco_run(name: str, recipe: dict, dense_steps: int = 0) -> GecoRun:
    """The sparse post-trained copy of ``name`` under ``recipe`` (over the model's default), read as a run."""
    loaded = zoo.load_sparse(name, recipe, dense_overrides=pretrain_overrides(name, dense_steps), progress=False)
    info, metrics = loaded.info, loaded.info["metrics"]
    dense_metrics, sparse = metrics["dense"], metrics["sparse"]
    exact = {f"{kind}_exact_match": metrics[kind]["exact_match"]["all"]
             for kind in ("dense", "sparse") if "exact_match" in metrics[kind]}
    return GecoRun(
        model=name, history=pd.DataFrame(loaded.history), evals=pd.DataFrame(loaded.evals), tau=info["tau"],
        tau_reference=info["tau_reference"], beta_min=info["recipe"]["beta_min"],
        dense_train_ce=info["dense_train_ce"], dense_heldout_ce=dense_metrics["heldout_ce"],
        heldout_split=info["heldout_split"], best_step=info["best_step"],
        train_wall_time_s=info["train_wall_time_s"], outcome=_outcome(None, sparse), **exact)


def _outcome(beta: float | None, sparse: dict) -> PenaltyOutcome:
    return PenaltyOutcome(beta=beta, kept_fraction=sparse["kept_fraction"], kept_per_query=sparse["kept_per_query"],
                          heldout_ce=sparse["heldout_ce"])


def compare_fixed_penalties(name: str, recipe: dict, betas, geco: GecoRun, dense_steps: int = 0) -> Tradeoff:
    """``recipe`` with eta = 0 and beta fixed at each of ``betas`` (an ordinary penalty), against ``geco``."""
    if not betas:
        raise ValueError("betas: need at least one fixed penalty to compare with GECO")
    overrides = pretrain_overrides(name, dense_steps)
    fixed = []
    for beta in betas:
        loaded = zoo.load_sparse(name, {**recipe, "eta": 0.0, "beta_init": float(beta)}, dense_overrides=overrides,
                                 progress=False)
        fixed.append(_outcome(float(beta), loaded.info["metrics"]["sparse"]))
    return Tradeoff(geco=geco.outcome, fixed=fixed)
