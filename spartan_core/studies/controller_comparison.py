"""Chapter 7's second question: is GECO a good controller of the multiplier? :func:`compare_controllers`
post-trains one dense model under GECO, PI and fixed penalties for several post-training seeds;
:class:`ControllerComparison` reports each controller's end point, evaluations over τ, β collapses, steps to its end
point and wall time over the seeds, and :func:`controllers_claim` judges the claim. The chapter's first question,
the learned gate against fixed mask rules, is :mod:`.baselines`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ..claims import Claim
from ..formatting import COUNT, DECIMAL3, DECIMAL4, PERCENT1, PERCENT_WHOLE, SETTING, TIMES, WHOLE
from .seeds import Seeds, Spread, spread, table_cell
from .training_dynamics import GecoRun, geco_run

__all__ = ["ControllerRun", "ControllerComparison", "compare_controllers", "controllers_claim"]

CONTROLLERS_RULE = "reproduced when GECO reaches the best end point meeting τ; partly when another controller does"
# each number summarised over a controller's seeds: its column in the table (None: not shown) and its format
SUMMARY = {"end_kept_per_query": ("end point (keys/query)", DECIMAL3), "heldout_ce": ("held-out CE", DECIMAL4),
           "exact_match": ("exact match", PERCENT1), "evals_over_tau": ("evals over τ", PERCENT_WHOLE),
           "beta_collapses": ("β collapses", COUNT), "beta_off_clamp_step": (None, WHOLE),
           "steps_near_end": ("steps to 10 % of end", WHOLE), "wall_time_s": ("wall time (s)", WHOLE)}


@dataclass(frozen=True)
class ControllerRun:
    """One post-training seed's run under one controller (``beta`` for a fixed one), read through :class:`GecoRun`."""

    controller: str
    beta: float | None
    run: GecoRun

    @property
    def seed(self) -> int:
        return self.run.seed

    @property
    def label(self) -> str:
        return {"geco": "GECO", "pi": "PI"}.get(self.controller) or f"fixed β = {SETTING(self.beta)}"

    def steps_near_end(self, tolerance: float = 0.1) -> int | None:
        """The first evaluation step that met tau with at most (1 + tolerance) x the fewest kept keys per query of
        any evaluation that met tau (the run's end point, measured where it selects); None if none met tau."""
        evals = self.run.evals
        feasible = evals[evals["eval_ce"] <= self.run.tau]
        if feasible.empty:
            return None
        near = feasible[feasible["eval_kept_per_query"] <= (1 + tolerance) * feasible["eval_kept_per_query"].min()]
        return int(near["step"].iloc[0])

    def first_step_off_clamp(self) -> int | None:
        """The first step at which beta was above its lower clamp (None for a fixed beta, or if it never left)."""
        if self.controller == "fixed":
            return None
        phase = self.run.geco_phase
        off = phase[phase["log_beta"] > math.log(self.run.beta_min) + 1e-9]
        return None if off.empty else int(off["step"].iloc[0])

    def row(self) -> dict:
        run, outcome = self.run, self.run.outcome
        met = run.evals_meeting_tau > 0
        return {"controller": self.controller, "label": self.label, "beta": self.beta, "seed": run.seed,
                "met_tau": met, "end_kept_per_query": outcome.kept_per_query if met else math.nan,
                "kept_per_query": outcome.kept_per_query, "kept_fraction": outcome.kept_fraction,
                "heldout_ce": outcome.heldout_ce, "exact_match": run.sparse_exact_match,
                "evals_over_tau": 1 - run.evals_meeting_tau / len(run.evals),
                "beta_collapses": run.beta_collapses if self.controller != "fixed" else math.nan,
                "steps_near_end": self.steps_near_end(), "beta_off_clamp_step": self.first_step_off_clamp(),
                "steps": len(run.geco_phase), "wall_time_s": run.train_wall_time_s, "tau": run.tau}


def compare_controllers(name: str, recipe: dict, seeds, controllers=("geco", "pi"), betas=(), dense_seed: int = 0,
                        kp: float | None = None, dense_steps: int | None = None) -> "ControllerComparison":
    """``recipe`` under each controller (and a fixed penalty at each of ``betas``) for every post-training seed of
    ``seeds``, all on training seed ``dense_seed``'s dense model, so that the controllers differ and nothing else."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds: need at least one post-training seed")
    unknown = [c for c in controllers if c not in ("geco", "pi")]
    if unknown or not (controllers or betas):
        raise ValueError("controllers: the adaptive controllers are geco and pi (fixed ones come from betas), got "
                         + (repr(unknown[0]) if unknown else "none"))
    pi = {} if kp is None else {"kp": kp}
    settings = [(c, None, {"controller": c, **(pi if c == "pi" else {})}) for c in controllers]
    settings += [("fixed", float(b), {"controller": "fixed", "beta_init": float(b)}) for b in betas]
    return ControllerComparison(name, tuple(
        ControllerRun(c, beta, geco_run(name, {**recipe, **extra}, dense_steps, seed=seed, dense_seed=dense_seed))
        for c, beta, extra in settings for seed in seeds))


@dataclass(frozen=True)
class ControllerComparison:
    """Every controller's runs on one dense model, one per post-training seed, in the order they ran."""

    model: str
    runs: tuple[ControllerRun, ...]

    @property
    def labels(self) -> list[str]:
        return list(dict.fromkeys(run.label for run in self.runs))

    @property
    def seeds(self) -> list[int]:
        return list(dict.fromkeys(run.seed for run in self.runs))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([run.row() for run in self.runs])

    def evals(self) -> pd.DataFrame:
        """Every run's evaluations, with its ``label`` and ``seed``."""
        return pd.concat([r.run.evals.assign(label=r.label, seed=r.seed) for r in self.runs], ignore_index=True)

    def history(self) -> pd.DataFrame:
        return pd.concat([r.run.geco_phase.assign(label=r.label, seed=r.seed) for r in self.runs], ignore_index=True)

    def per_controller(self) -> list[dict]:
        """Per controller: its label, seeds, in how many it met tau, and each number of :data:`SUMMARY` as a
        :class:`Spread` over the seeds that measured it (None where none did)."""
        rows = []
        for label in self.labels:
            frame = Seeds(tuple(run for run in self.runs if run.label == label)).per_seed()
            rows.append({"label": label, "seeds": len(frame), "met_tau": int(frame["met_tau"].sum()),
                         **{key: spread(frame[key].dropna()) if frame[key].notna().any() else None
                            for key in SUMMARY}})
        return rows

    def summary(self) -> pd.DataFrame:
        """:meth:`per_controller` as recorded, each spread as its dict."""
        return pd.DataFrame([{key: value.to_dict() if isinstance(value, Spread) else value
                              for key, value in row.items()} for row in self.per_controller()])

    def table(self) -> pd.DataFrame:
        """The comparison as displayed: each controller's mean with its min-max over seeds."""
        rows = self.per_controller()
        shown = {key: column for key, column in SUMMARY.items()
                 if column[0] and (key != "exact_match" or any(row[key] is not None for row in rows))}
        cells = [{"met τ (seeds)": f"{row['met_tau']} of {row['seeds']}",
                  **{title: table_cell(row[key], fmt) or "–" for key, (title, fmt) in shown.items()}} for row in rows]
        index = pd.Index(self.labels, name=f"controller (mean, min–max over {len(self.seeds)} seeds)")
        return pd.DataFrame(cells, index=index)

    def best(self) -> str | None:
        """The controller that met tau in every seed with the fewest kept keys per query on average."""
        means = {row["label"]: row["end_kept_per_query"].mean for row in self.per_controller()
                 if row["met_tau"] == row["seeds"]}
        return min(means, key=means.get) if means else None

    @property
    def sentence(self) -> str:
        rows, best = self.per_controller(), self.best()
        lead = (f"On {self.model}, the controller that met τ in every seed with the fewest keys per query is {best}. "
                if best else f"On {self.model}, no controller met τ in every seed. ")
        means = {row["label"]: row["end_kept_per_query"].mean for row in rows if row["end_kept_per_query"] is not None}
        if best and best != "GECO" and "GECO" in means:
            lead += f"GECO's end point is {TIMES(means['GECO'] / means[best])} as many keys per query as {best}'s. "
        return lead + "; ".join(map(_describe, rows)) + "."

    @property
    def claim_sentence(self) -> str:
        parts = []
        for row in (row for row in self.per_controller() if row["label"] in ("GECO", "PI")):
            end = "never met τ" if row["end_kept_per_query"] is None else (
                f"{DECIMAL3(row['end_kept_per_query'].mean)} keys per query")
            collapses = 0.0 if row["beta_collapses"] is None else row["beta_collapses"].mean
            parts.append(f"{row['label']} {end}, {COUNT(collapses)} β collapses")
        return (f"{self.model}, {len(self.seeds)} seeds: " + "; ".join(parts)
                + f"; best end point meeting τ in every seed: {self.best() or 'none'}")


def _describe(row: dict) -> str:
    """One controller's clause of :attr:`ControllerComparison.sentence`."""
    if row["end_kept_per_query"] is None:
        return f"{row['label']} never met τ"
    met = "" if row["met_tau"] == row["seeds"] else f" (met τ in {row['met_tau']} of {row['seeds']} seeds)"
    text = (f"{row['label']} ended at {row['end_kept_per_query'].summary(DECIMAL3)} keys per query{met}, "
            f"{row['evals_over_tau'].summary(PERCENT_WHOLE)} of evaluations over τ")
    if row["beta_collapses"] is not None:
        text += f", β collapsed {row['beta_collapses'].summary(COUNT)} times"
    if row["beta_off_clamp_step"] is not None:
        text += f" and first left its lower clamp at step {row['beta_off_clamp_step'].summary(WHOLE)}"
    return text


def controllers_claim(comparison: ControllerComparison) -> Claim:
    """The controllers claim: reproduced when GECO has the best end point meeting τ in every seed, partly when
    another controller has (the rule cannot say not reproduced); unjudged (pending) when none met τ in every seed."""
    best = comparison.best()
    verdict = None if best is None else "reproduced" if best.lower().startswith("geco") else "partly"
    return Claim("controllers", comparison.claim_sentence, {"seeds": comparison.seeds, "best": best}, verdict,
                 None if verdict is None else CONTROLLERS_RULE,
                 "" if verdict is None else f"best end point meeting τ in every seed: {best}")
