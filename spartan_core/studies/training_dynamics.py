"""Chapter 2's question: how does GECO post-training behave, and is it better than a fixed penalty?

:func:`geco_run` loads (trains on first use) a model's sparse post-trained copy for one training seed and reads
its logged run; :func:`compare_fixed_penalties` runs the same loop with the multiplier held fixed (eta = 0) at
each of several values. A toy retrained elsewhere is another model, so one run is one draw:
:func:`geco_over_seeds` and :func:`penalties_over_seeds` repeat them for every training seed, and
:class:`SeedRuns` / :class:`SeedTradeoffs` report each headline number as a
:class:`~spartan_core.studies.seeds.Spread` (mean, min-max over seeds). Every class says what it shows in
sentences generated from its numbers: for every fixed penalty, in how many seeds it ended sparser than GECO
and at what held-out CE relative to GECO's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from .. import zoo
from .common import pretrain_overrides
from ..formatting import PERCENT
from .seeds import Spread, spread, table_cell

__all__ = ["GecoRun", "PenaltyOutcome", "Tradeoff", "SeedRuns", "SeedTradeoffs", "geco_run",
           "compare_fixed_penalties", "geco_over_seeds", "penalties_over_seeds", "HEADLINE"]


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
    seed: int = 0

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
            "model": self.model, "seed": self.seed, "steps": len(phase), "tau": self.tau,
            "tau_reference": self.tau_reference,
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
    seed: int = 0

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


def geco_run(name: str, recipe: dict, dense_steps: int = 0, seed: int = 0, dense_seed: int | None = None) -> GecoRun:
    """The sparse post-trained copy of ``name`` under ``recipe`` (over the model's default) for training seed
    ``seed`` (a toy's pretraining and the post-training both use it, unless ``dense_seed`` names the dense
    model's own), read as a run."""
    overrides = pretrain_overrides(name, dense_steps, seed if dense_seed is None else dense_seed)
    loaded = zoo.load_sparse(name, {**recipe, "seed": seed}, dense_overrides=overrides, progress=False,
                             weights=False)
    info, metrics = loaded.info, loaded.info["metrics"]
    dense_metrics, sparse = metrics["dense"], metrics["sparse"]
    exact = {f"{kind}_exact_match": metrics[kind]["exact_match"]["all"]
             for kind in ("dense", "sparse") if "exact_match" in metrics[kind]}
    return GecoRun(
        model=name, history=pd.DataFrame(loaded.history), evals=pd.DataFrame(loaded.evals), tau=info["tau"],
        tau_reference=info["tau_reference"], beta_min=info["recipe"]["beta_min"],
        dense_train_ce=info["dense_train_ce"], dense_heldout_ce=dense_metrics["heldout_ce"],
        heldout_split=info["heldout_split"], best_step=info["best_step"],
        train_wall_time_s=info["train_wall_time_s"], outcome=_outcome(None, sparse), seed=seed, **exact)


def _outcome(beta: float | None, sparse: dict) -> PenaltyOutcome:
    return PenaltyOutcome(beta=beta, kept_fraction=sparse["kept_fraction"], kept_per_query=sparse["kept_per_query"],
                          heldout_ce=sparse["heldout_ce"])


def compare_fixed_penalties(name: str, recipe: dict, betas, geco: GecoRun, dense_steps: int = 0) -> Tradeoff:
    """``recipe`` with eta = 0 and beta fixed at each of ``betas`` (an ordinary penalty), against ``geco``, on
    the same training seed as ``geco`` (the same dense toy)."""
    if not betas:
        raise ValueError("betas: need at least one fixed penalty to compare with GECO")
    overrides = pretrain_overrides(name, dense_steps, geco.seed)
    fixed = []
    for beta in betas:
        loaded = zoo.load_sparse(name, {**recipe, "seed": geco.seed, "eta": 0.0, "beta_init": float(beta)},
                                 dense_overrides=overrides, progress=False, weights=False)
        fixed.append(_outcome(float(beta), loaded.info["metrics"]["sparse"]))
    return Tradeoff(geco=geco.outcome, fixed=fixed, seed=geco.seed)


# The headline numbers of a GECO run that the chapter reports over seeds (keys of GecoRun.metrics()).
HEADLINE = ("kept_fraction", "kept_per_query", "sparse_heldout_ce", "dense_heldout_ce", "dense_train_ce", "tau",
            "expected_fraction_first", "expected_fraction_last", "beta_first", "beta_max", "beta_last",
            "beta_collapses", "evals_meeting_tau", "dense_exact_match", "sparse_exact_match", "train_wall_time_s")


def _fixed4(value: float) -> str:
    return f"{value:.4f}"


def _sci(value: float) -> str:
    return f"{value:.1e}"


def _count(value: float) -> str:
    return f"{value:.2g}"


def _g4(value: float) -> str:
    return f"{value:.4g}"


def _in_seeds(count: int, total: int) -> str:
    """``in all 3 seeds`` / ``in 2 of 3 seeds`` / ``in none of the 3 seeds`` (two: ``in both`` / ``in neither``)."""
    if total == 1:
        return "in its one seed" if count else "not in its one seed"
    if count == total:
        return "in both seeds" if total == 2 else f"in all {total} seeds"
    if count == 0:
        return "in neither seed" if total == 2 else f"in none of the {total} seeds"
    return f"in {count} of {total} seeds"


def _clause(count: int, total: int, yes: str, no: str | None = None) -> str:
    """``yes in 2 of 3 seeds``, ``yes in all 3 seeds``; with ``no`` (the opposite), none is ``no in all 3 seeds``.
    Over one seed simply ``yes`` or ``no``."""
    if total == 1:
        return yes if count else (no or f"not: {yes}")
    if count == 0 and no is not None:
        return f"{no} {_in_seeds(total, total)}"
    return f"{yes} {_in_seeds(count, total)}"


@dataclass
class SeedRuns:
    """The GECO run of one model for each training seed: per-seed rows and each headline number's spread."""

    runs: list[GecoRun]

    def __post_init__(self):
        if not self.runs:
            raise ValueError("runs: need the run of at least one training seed")
        seeds = [run.seed for run in self.runs]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"runs: each training seed once, got seeds {seeds}")

    @property
    def model(self) -> str:
        return self.runs[0].model

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    @property
    def n(self) -> int:
        return len(self.runs)

    def frame(self) -> pd.DataFrame:
        """One row per training seed: the seed and every number of :meth:`GecoRun.metrics`."""
        return pd.DataFrame([run.metrics() for run in self.runs])

    def per_seed_table(self) -> pd.DataFrame:
        """The headline numbers of each seed's run, as displayed (one row per training seed)."""
        frame = self.frame().set_index("seed")
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

    def spreads(self) -> dict[str, Spread]:
        """Mean and min-max over seeds of every headline number (:data:`HEADLINE`) the runs have."""
        frame = self.frame()
        return {key: spread(frame[key]) for key in HEADLINE if key in frame and frame[key].notna().all()}

    def spread_record(self) -> dict[str, dict]:
        """:meth:`spreads` as plain dicts (``mean``, ``min``, ``max``, ``n``, ``values``) for metrics.json."""
        return {key: value.to_dict() for key, value in self.spreads().items()}

    def history(self) -> pd.DataFrame:
        """Every seed's per-step log, with a ``seed`` column first."""
        return pd.concat([run.history.assign(seed=run.seed)[["seed", *run.history.columns]] for run in self.runs],
                         ignore_index=True)

    def evals(self) -> pd.DataFrame:
        """Every seed's evaluations, with a ``seed`` column first."""
        return pd.concat([run.evals.assign(seed=run.seed)[["seed", *run.evals.columns]] for run in self.runs],
                         ignore_index=True)

    @property
    def taus(self) -> dict[int, float]:
        return {run.seed: run.tau for run in self.runs}

    @property
    def best_steps(self) -> dict[int, int | None]:
        return {run.seed: run.best_step for run in self.runs}

    def summary(self) -> pd.DataFrame:
        """Dense against sparse, as displayed: each number's mean with its min-max over seeds."""
        s = self.spreads()
        rows = {f"held-out CE ({self.runs[0].heldout_split} split)":
                (table_cell(s["dense_heldout_ce"], _g4), table_cell(s["sparse_heldout_ce"], _g4)),
                "kept edge fraction": ("1", table_cell(s["kept_fraction"], _g4))}
        if "sparse_exact_match" in s:
            rows["exact match"] = (table_cell(s["dense_exact_match"], PERCENT), table_cell(s["sparse_exact_match"], PERCENT))
        return pd.DataFrame(list(rows.values()), columns=["dense", "sparse (GECO)"],
                            index=pd.Index(list(rows), name=f"mean (min–max over {self.n} seeds)"))

    @property
    def steps(self) -> int:
        return int(self.frame()["steps"].iloc[0])

    @property
    def evaluations(self) -> int:
        return int(self.frame()["evals"].iloc[0])

    @property
    def sentence(self) -> str:
        """What the runs did, for the chapter's reader."""
        s = self.spreads()
        collapses = s["beta_collapses"]
        if collapses.high == 0:
            fell = "never fell back onto its lower clamp"
        elif self.n == 1:
            fell = f"{_times(int(collapses.mean))} fell back onto its lower clamp"
        else:
            fell = (f"fell back onto its lower clamp {Spread.summary(collapses, _count)} times per run "
                    f"({_in_seeds(sum(v > 0 for v in collapses.values), self.n)} at least once)")
        taus = s["tau"]
        tau = f"τ = {Spread.summary(taus, _fixed4)}"
        steps = ", ".join("none" if run.best_step is None else str(run.best_step) for run in self.runs)
        if all(run.best_step is None for run in self.runs):
            kept = ""
        elif self.n == 1:
            kept = f" The kept checkpoint is step {steps}."
        else:
            kept = f" The kept checkpoints are at steps {steps} (seeds {', '.join(map(str, self.seeds))})."
        return (f"Over {self.n} training seed{'s' if self.n > 1 else ''}, the expected edge fraction fell from "
                f"{Spread.summary(s['expected_fraction_first'], _fixed4)} to {Spread.summary(s['expected_fraction_last'], _fixed4)} "
                f"while β rose from {Spread.summary(s['beta_first'], _sci)} to at most {Spread.summary(s['beta_max'], _sci)}; "
                f"β {fell}, "
                f"and the evaluation CE met {tau} at {Spread.summary(s['evals_meeting_tau'], _count)} of {self.evaluations} "
                f"evaluations.{kept}")

    @property
    def dynamics_sentence(self) -> str:
        """The training-dynamics row of the claims table."""
        s = self.spreads()
        return (f"{self.model}, {self.steps} steps, {self.n} seed{'s' if self.n > 1 else ''}: expected edge "
                f"fraction {Spread.summary(s['expected_fraction_first'], _fixed4)} → "
                f"{Spread.summary(s['expected_fraction_last'], _fixed4)}; β max {Spread.summary(s['beta_max'], _sci)}, falling back to "
                f"its lower clamp {Spread.summary(s['beta_collapses'], _count)} "
                f"times; eval CE ≤ τ at {Spread.summary(s['evals_meeting_tau'], _count)} of {self.evaluations} evaluations")

    @property
    def kept_sentence(self) -> str:
        """The edges-kept row of the claims table."""
        s = self.spreads()
        text = (f"{self.model}: {Spread.summary(s['kept_fraction'], PERCENT)} of attention edges kept "
                f"({Spread.summary(s['kept_per_query'], lambda v: f'{v:.2f}')} keys per query), held-out CE "
                f"{Spread.summary(s['sparse_heldout_ce'], _fixed4)} vs dense {Spread.summary(s['dense_heldout_ce'], _fixed4)}")
        if "sparse_exact_match" in s:
            pct = lambda v: f"{v:.1%}"  # noqa: E731
            text += (f"; exact match {Spread.summary(s['sparse_exact_match'], pct)} "
                     f"(dense {Spread.summary(s['dense_exact_match'], pct)})")
        return text


def _label(beta: float | None) -> str:
    return "GECO" if beta is None else f"fixed β = {beta:g}"


@dataclass
class SeedTradeoffs:
    """GECO against the fixed penalties for each training seed (each seed's runs share its dense toy)."""

    tradeoffs: list[Tradeoff]

    def __post_init__(self):
        if not self.tradeoffs:
            raise ValueError("tradeoffs: need the comparison of at least one training seed")
        betas = {tuple(run.beta for run in t.fixed) for t in self.tradeoffs}
        if len(betas) != 1:
            raise ValueError(f"tradeoffs: every seed must compare the same fixed betas, got {sorted(betas)}")

    @property
    def seeds(self) -> list[int]:
        return [t.seed for t in self.tradeoffs]

    @property
    def n(self) -> int:
        return len(self.tradeoffs)

    @property
    def betas(self) -> list[float]:
        return [run.beta for run in self.tradeoffs[0].fixed]

    def frame(self) -> pd.DataFrame:
        """One row per seed and run: ``seed``, ``run`` (its label), then :meth:`Tradeoff.frame`'s columns and
        ``beats_geco`` (a fixed beta sparser than GECO at no higher held-out CE, in that seed)."""
        parts = []
        for tradeoff in self.tradeoffs:
            part = tradeoff.frame()
            part.insert(0, "run", [_label(b) for b in [None, *self.betas]])
            part.insert(0, "seed", tradeoff.seed)
            part["beats_geco"] = [False] + [run.beta in tradeoff.beats_geco() for run in tradeoff.fixed]
            parts.append(part)
        return pd.concat(parts, ignore_index=True)

    def spreads(self) -> dict[str, dict[str, Spread]]:
        """Per run label: the spread over seeds of its kept fraction, keys per query, held-out CE and CE ÷ GECO's."""
        frame = self.frame()
        return {label: {key: spread(group[key]) for key in
                        ("kept_fraction", "kept_per_query", "heldout_ce", "ce_ratio_to_geco")}
                for label, group in frame.groupby("run", sort=False)}

    def spread_record(self) -> dict[str, dict[str, dict]]:
        return {label: {key: value.to_dict() for key, value in values.items()}
                for label, values in self.spreads().items()}

    def wins(self) -> pd.DataFrame:
        """Per fixed beta: in how many of the seeds it kept fewer edges than GECO, a held-out CE no higher than
        GECO's, and both (it beat GECO)."""
        frame = self.frame()
        geco = frame[frame["method"] == "geco"].set_index("seed")
        rows = []
        for beta in self.betas:
            runs = frame[(frame["method"] == "fixed") & (frame["beta"] == beta)].set_index("seed")
            sparser = runs["kept_fraction"] < geco.loc[runs.index, "kept_fraction"]
            no_worse = runs["heldout_ce"] <= geco.loc[runs.index, "heldout_ce"]
            rows.append({"beta": beta, "seeds": self.n, "sparser": int(sparser.sum()),
                         "ce_no_higher": int(no_worse.sum()), "beats_geco": int((sparser & no_worse).sum()),
                         "beating_seeds": [int(seed) for seed in runs.index[sparser & no_worse]]})
        return pd.DataFrame(rows)

    def beats_geco(self) -> dict[float, list[int]]:
        """Per fixed beta, the seeds in which it ended sparser than GECO without a higher held-out CE."""
        return {row["beta"]: row["beating_seeds"] for _, row in self.wins().iterrows()}

    def table(self) -> pd.DataFrame:
        """The comparison as displayed: each run's mean, with min-max over seeds, and its wins over GECO."""
        spreads, wins = self.spreads(), self.wins().set_index("beta")
        cell = table_cell
        rows = []
        for beta in [None, *self.betas]:
            s = spreads[_label(beta)]
            rows.append({"kept edges (%)": cell(s["kept_fraction"], lambda v: f"{100 * v:.3g}"),
                         "keys per query": cell(s["kept_per_query"], lambda v: f"{v:.3g}"),
                         "held-out CE": cell(s["heldout_ce"], lambda v: f"{v:.3g}"),
                         "CE ÷ GECO's": cell(s["ce_ratio_to_geco"], lambda v: f"{v:.2g}"),
                         "beats GECO on both (seeds)": "" if beta is None else
                         f"{wins.loc[beta, 'beats_geco']} of {self.n}"})
        return pd.DataFrame(rows, index=pd.Index([_label(b) for b in [None, *self.betas]],
                                                 name=f"run (mean, min–max over {self.n} seeds)"))

    def _verdict(self, beta: float, row) -> str:
        s = self.spreads()[_label(beta)]
        ratio = Spread.summary(s["ce_ratio_to_geco"], lambda v: f"{v:.2g}×")
        sparser = _clause(row["sparser"], self.n, "kept fewer edges than GECO", "kept no fewer edges than GECO")
        lower = _clause(row["ce_no_higher"], self.n, "a held-out CE no higher than GECO's",
                        "a higher held-out CE than GECO's")
        both = ("it does not beat GECO on both counts" if self.n == 1 and not row["beats_geco"] else
                _clause(row["beats_geco"], self.n, "it beats GECO on both counts"))
        kept = Spread.summary(s["kept_fraction"], PERCENT)
        return f"β = {beta:g} {sparser} ({kept} kept) and {lower} ({ratio} GECO's): {both}"

    @property
    def sentence(self) -> str:
        geco = self.spreads()["GECO"]
        verdicts = [self._verdict(row["beta"], row) for _, row in self.wins().iterrows()]
        return (f"GECO kept {Spread.summary(geco['kept_fraction'], PERCENT)} of the edges at held-out CE "
                f"{Spread.summary(geco['heldout_ce'], lambda v: f'{v:.3g}')}. " + "; ".join(verdicts) + ".")


def geco_over_seeds(name: str, recipe: dict, seeds, dense_steps: int = 0) -> SeedRuns:
    """:func:`geco_run` for every training seed of ``seeds`` (each its own dense toy and sparse copy)."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds: need at least one training seed")
    return SeedRuns([geco_run(name, recipe, dense_steps=dense_steps, seed=seed) for seed in seeds])


def penalties_over_seeds(name: str, recipe: dict, betas, runs: SeedRuns, dense_steps: int = 0) -> SeedTradeoffs:
    """:func:`compare_fixed_penalties` for each seed's GECO run of ``runs``, on that seed's own dense toy."""
    return SeedTradeoffs([compare_fixed_penalties(name, recipe, betas, run, dense_steps=dense_steps)
                          for run in runs.runs])
