"""Chapter 7's two questions: is the learned gate better than a fixed mask rule at the same number of kept keys per
query, and is GECO a good controller of the multiplier?

:func:`pareto` runs each fixed mask policy of :mod:`~spartan_core.mechanism.policies` at several budgets of kept
keys per query through the one recipe (``SparseRecipe(policy=..., keys_per_query=...)``): every run yields two
points, the policy applied to the dense model as it is and after fine-tuning with the pattern fixed, and the
model's default SPARTAN run is the learned point. :class:`Pareto` compares them at the learned point's budget.
:func:`compare_controllers` post-trains one dense model under GECO, the PI controller and fixed penalties for
several post-training seeds; :class:`ControllerComparison` reports each controller's end point, how often its
evaluations broke the constraint, how often beta collapsed, how soon it got near its end point, and its wall time.
Every verdict is a sentence generated from the measured numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .. import zoo
from ..mechanism.policies import INTEGER_POLICIES, POLICIES
from .common import pretrain_overrides
from .seeds import spread, table_cell
from .training_dynamics import GecoRun, geco_run

__all__ = ["ParetoPoint", "Pareto", "policy_budgets", "policy_points", "learned_point", "pareto", "steps_sentence",
           "ControllerRun", "ControllerComparison", "compare_controllers"]

LEARNED = "SPARTAN gate"


@dataclass(frozen=True)
class ParetoPoint:
    """One model on held-out data: a fixed ``policy`` at ``budget`` keys per query, ``as is`` or ``fine-tuned``,
    or the learned gate (``policy`` :data:`LEARNED`, stage ``learned``, no budget). ``steps`` are its training
    steps after the dense model (0 as is)."""

    model: str
    policy: str
    stage: str
    budget: float | None
    kept_per_query: float
    kept_fraction: float
    heldout_ce: float
    exact_match: float | None
    steps: int
    wall_time_s: float


def policy_budgets(policy: str, budgets) -> list[float]:
    """The budgets a policy runs at: a whole-number policy (top-k, window, sink) only the whole ones."""
    if policy not in POLICIES:
        raise ValueError(f"policies: must be among {', '.join(POLICIES)}, got {policy!r}")
    chosen = [float(b) for b in budgets if policy not in INTEGER_POLICIES or float(b) == int(b)]
    if policy == "sink":
        chosen = [b for b in chosen if b >= 1]
    return chosen


def _exact_match(metrics: dict) -> float | None:
    """Held-out exact match over all problems, for models with a task metric (the addition toy); else None."""
    return metrics.get("exact_match", {}).get("all")


def _point(name: str, policy: str, stage: str, budget, metrics: dict, steps: int, wall: float) -> ParetoPoint:
    return ParetoPoint(model=name, policy=policy, stage=stage, budget=budget,
                       kept_per_query=metrics["kept_per_query"], kept_fraction=metrics["kept_fraction"],
                       heldout_ce=metrics["heldout_ce"], exact_match=_exact_match(metrics), steps=steps,
                       wall_time_s=wall)


def policy_points(name: str, policy: str, budgets, recipe: dict, seed: int = 0,
                  dense_steps: int = 0) -> list[ParetoPoint]:
    """Both points (as is, fine-tuned) of ``policy`` at each of its budgets on training seed ``seed``'s dense
    model; ``recipe`` sets the fine-tuning (its ``steps`` plus ``floor_steps`` are the steps with the pattern fixed)."""
    overrides = pretrain_overrides(name, dense_steps, seed)
    points = []
    for budget in policy_budgets(policy, budgets):
        loaded = zoo.load_sparse(name, {**recipe, "policy": policy, "keys_per_query": budget, "seed": seed},
                                 dense_overrides=overrides, progress=False, weights=False)
        metrics, steps = loaded.info["metrics"], len(loaded.history)
        points.append(_point(name, policy, "as is", budget, metrics["policy_before_training"], 0, 0.0))
        points.append(_point(name, policy, "fine-tuned", budget, metrics["sparse"], steps,
                             loaded.info["train_wall_time_s"]))
    return points


def learned_point(name: str, recipe: dict | None = None, seed: int = 0,
                  dense_steps: int = 0) -> tuple[ParetoPoint, dict]:
    """The learned gate's point (the model's default recipe, or ``recipe`` over it) and the dense metrics."""
    loaded = zoo.load_sparse(name, {**(recipe or {}), "seed": seed},
                             dense_overrides=pretrain_overrides(name, dense_steps, seed), progress=False,
                             weights=False)
    metrics = loaded.info["metrics"]
    point = _point(name, LEARNED, "learned", None, metrics["sparse"], len(loaded.history),
                   loaded.info["train_wall_time_s"])
    return point, metrics["dense"]


def pareto(name: str, policies, budgets, recipe: dict, seed: int = 0, learned_recipe: dict | None = None,
           dense_steps: int = 0) -> "Pareto":
    """Every policy of ``policies`` at ``budgets`` (see :func:`policy_points`) and the learned gate (the default
    recipe, or ``learned_recipe`` over it) on training seed ``seed``'s dense ``name``."""
    policies = list(policies)
    if not policies:
        raise ValueError("policies: need at least one fixed mask policy")
    learned, dense = learned_point(name, learned_recipe, seed, dense_steps)
    points = [p for policy in policies for p in policy_points(name, policy, budgets, recipe, seed, dense_steps)]
    return Pareto(model=name, points=[*points, learned], dense_ce=dense["heldout_ce"],
                  dense_exact_match=_exact_match(dense), seed=seed)


def _ce(value: float) -> str:
    return f"{value:.4g}"


def _times(ratio: float) -> str:
    return f"{ratio:.2f}×" if ratio < 10 else f"{ratio:.0f}×"


@dataclass
class Pareto:
    """The fixed policies' points and the learned point of one model."""

    model: str
    points: list[ParetoPoint]
    dense_ce: float
    dense_exact_match: float | None = None
    seed: int = 0

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(p) for p in self.points])

    @property
    def learned(self) -> ParetoPoint:
        return next(p for p in self.points if p.stage == "learned")

    @property
    def policies(self) -> list[str]:
        return list(dict.fromkeys(p.policy for p in self.points if p.stage != "learned"))

    @property
    def tuned_steps(self) -> list[int]:
        """The distinct fine-tuning steps of the fixed policies' runs."""
        return sorted({p.steps for p in self.points if p.stage == "fine-tuned"})

    def curve(self, policy: str, stage: str = "fine-tuned") -> list[ParetoPoint]:
        return sorted((p for p in self.points if p.policy == policy and p.stage == stage),
                      key=lambda p: p.kept_per_query)

    def ce_at_learned(self, policy: str, stage: str = "fine-tuned") -> float | None:
        """The policy's held-out CE at the learned gate's kept keys per query, interpolated linearly in log keys
        between the two budgets around it; None outside the budgets the policy ran at."""
        curve, k = self.curve(policy, stage), self.learned.kept_per_query
        ks = np.log([p.kept_per_query for p in curve])
        if not curve or not ks[0] <= math.log(k) <= ks[-1]:
            return None
        return float(np.interp(math.log(k), ks, [p.heldout_ce for p in curve]))

    def comparison(self) -> pd.DataFrame:
        """Per policy and stage: its CE at the learned budget (interpolated), the fewest keys it ran at and the CE
        there, and whether any of its points has both no more keys and no higher CE than the learned gate."""
        learned = self.learned
        rows = []
        for policy in self.policies:
            for stage in ("as is", "fine-tuned"):
                curve = self.curve(policy, stage)
                at = self.ce_at_learned(policy, stage)
                rows.append({"policy": policy, "stage": stage, "ce_at_learned_keys": at,
                             "fewest_keys": curve[0].kept_per_query, "ce_at_fewest_keys": curve[0].heldout_ce,
                             "beats_learned": any(p.kept_per_query <= learned.kept_per_query
                                                  and p.heldout_ce <= learned.heldout_ce for p in curve)})
        return pd.DataFrame(rows)

    def table(self) -> pd.DataFrame:
        """Every run as displayed: one row per policy and budget (the learned gate last), the fine-tuned model's
        kept keys and edges, and held-out CE (and exact match) as is and fine-tuned."""
        rows = {}
        for p in sorted(self.points, key=lambda p: (p.stage == "learned", p.policy, p.budget or 0)):
            row = rows.setdefault((p.policy, "learned" if p.budget is None else f"{p.budget:g}"), {})
            stage = "as is" if p.stage == "as is" else "trained"
            if stage == "trained":
                row.update({"keys per query": round(p.kept_per_query, 3),
                            "kept edges (%)": round(100 * p.kept_fraction, 2), "steps": p.steps})
            row[f"CE {stage}"] = round(p.heldout_ce, 4)
            if p.exact_match is not None:
                row[f"exact match {stage} (%)"] = round(100 * p.exact_match, 1)
        table = pd.DataFrame.from_dict(rows, orient="index")
        order = ["keys per query", "kept edges (%)", "CE as is", "CE trained", "exact match as is (%)",
                 "exact match trained (%)", "steps"]
        table = table[[c for c in order if c in table]]
        table.index = pd.MultiIndex.from_tuples(table.index, names=["policy", "budget"])
        return table

    def _verdict(self, row) -> str:
        learned = self.learned
        if row["beats_learned"]:
            return f"{row['policy']} beats the learned gate: some budget keeps no more keys at no higher CE"
        if not pd.isna(row["ce_at_learned_keys"]):
            ratio = row["ce_at_learned_keys"] / learned.heldout_ce
            return (f"{row['policy']} reaches CE {_ce(row['ce_at_learned_keys'])} at that budget "
                    f"({_times(ratio)} the gate's)")
        if row["fewest_keys"] > learned.kept_per_query:
            return (f"{row['policy']} already has CE {_ce(row['ce_at_fewest_keys'])} at its smallest budget, "
                    f"{row['fewest_keys']:.2f} keys per query ({_times(row['ce_at_fewest_keys'] / learned.heldout_ce)} "
                    f"the gate's CE with {row['fewest_keys'] / learned.kept_per_query:.1f}× its keys)")
        return f"{row['policy']} ran only at budgets above the gate's, with no point better on both"

    @property
    def sentence(self) -> str:
        learned, table = self.learned, self.comparison()
        tuned = table[table["stage"] == "fine-tuned"]
        winners = list(tuned.loc[tuned["beats_learned"], "policy"])
        exact = "" if learned.exact_match is None else f", exact match {learned.exact_match:.1%}"
        head = (f"{self.model}: the learned gate keeps {learned.kept_per_query:.2f} keys per query "
                f"({learned.kept_fraction:.2%} of edges) at held-out CE {_ce(learned.heldout_ce)}{exact} "
                f"(dense {_ce(self.dense_ce)}). Fine-tuned at fixed patterns, ")
        verdict = (f"{' and '.join(winners)} beat{'s' if len(winners) == 1 else ''} it on both counts. " if winners
                   else "no policy matches it on both counts. ")
        return head + verdict + "; ".join(self._verdict(row) for _, row in tuned.iterrows()) + "."

    def beaten_policies(self) -> list[str]:
        """The policies none of whose fine-tuned points has both no more keys and no higher CE than the gate."""
        tuned = self.comparison().query("stage == 'fine-tuned'")
        return list(tuned.loc[~tuned["beats_learned"], "policy"])

    @property
    def claim_sentence(self) -> str:
        learned, beaten = self.learned, self.beaten_policies()
        return (f"{self.model}: learned gate {learned.kept_per_query:.2f} keys per query at CE "
                f"{_ce(learned.heldout_ce)}; {len(beaten)} of {len(self.policies)} fine-tuned fixed policies have "
                f"no point with as few keys and as low a CE (policies fine-tuned "
                f"{', '.join(map(str, self.tuned_steps))} steps, "
                f"the gate post-trained {learned.steps})")


def steps_sentence(paretos) -> str:
    """How much training each side of the comparison had: the fixed policies' fine-tuning against the learned
    gate's post-training (its floor phase included)."""
    parts = []
    for pareto in paretos:
        parts.append(f"{pareto.model}: {', '.join(map(str, pareto.tuned_steps))} against {pareto.learned.steps}")
    less = all(p.steps <= pareto.learned.steps for pareto in paretos for p in pareto.points)
    verdict = (" The policies had no more training than the gate, so the comparison can only favour the gate."
               if less else " Some policy had more training than the gate.")
    return ("Training steps after the dense model, fixed policies' fine-tuning against the learned gate's "
            "post-training: " + "; ".join(parts) + "." + verdict)


def _whole_percent(value: float) -> str:
    return f"{value:.0%}"


def _controller_label(controller: str, beta: float | None = None) -> str:
    return {"geco": "GECO", "pi": "PI"}.get(controller) or f"fixed β = {beta:g}"


@dataclass
class ControllerRun:
    """One post-training run under one controller, read through :class:`GecoRun`."""

    controller: str
    beta: float | None
    run: GecoRun

    @property
    def label(self) -> str:
        return _controller_label(self.controller, self.beta)

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

    def metrics(self) -> dict:
        run, outcome = self.run, self.run.outcome
        met = run.evals_meeting_tau > 0
        return {"controller": self.controller, "label": self.label, "beta": self.beta, "seed": run.seed,
                "met_tau": met, "end_kept_per_query": outcome.kept_per_query if met else math.nan,
                "kept_per_query": outcome.kept_per_query, "kept_fraction": outcome.kept_fraction,
                "heldout_ce": outcome.heldout_ce, "exact_match": run.sparse_exact_match,
                "evals_over_tau": 1 - run.evals_meeting_tau / len(run.evals),
                "beta_collapses": run.beta_collapses if self.controller != "fixed" else math.nan,
                "steps_near_end": self.steps_near_end(), "beta_off_clamp_step": self.first_step_off_clamp(),
                "steps": len(run.geco_phase),
                "wall_time_s": run.train_wall_time_s, "tau": run.tau}


def compare_controllers(name: str, recipe: dict, seeds, controllers=("geco", "pi"), betas=(), dense_seed: int = 0,
                        kp: float | None = None, dense_steps: int = 0) -> "ControllerComparison":
    """``recipe`` under each controller (and a fixed penalty at each of ``betas``) for every post-training seed of
    ``seeds``, all on training seed ``dense_seed``'s dense model, so that the controllers differ and nothing else."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds: need at least one post-training seed")
    unknown = [c for c in controllers if c not in ("geco", "pi")]
    if unknown:
        raise ValueError(f"controllers: the adaptive controllers are geco and pi (fixed ones come from betas), "
                         f"got {unknown[0]!r}")
    if not controllers and not betas:
        raise ValueError("controllers: need at least one controller or fixed beta")
    settings = [(c, None, {"controller": c, **({"kp": kp} if c == "pi" and kp is not None else {})})
                for c in controllers]
    settings += [("fixed", float(b), {"controller": "fixed", "beta_init": float(b)}) for b in betas]
    runs = [ControllerRun(c, beta, geco_run(name, {**recipe, **extra}, dense_steps, seed=seed,
                                                  dense_seed=dense_seed))
            for c, beta, extra in settings for seed in seeds]
    return ControllerComparison(model=name, runs=runs)


@dataclass
class ControllerComparison:
    """Every controller's runs on one dense model, one per post-training seed."""

    model: str
    runs: list[ControllerRun]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([run.metrics() for run in self.runs])

    @property
    def labels(self) -> list[str]:
        return list(dict.fromkeys(run.label for run in self.runs))

    @property
    def seeds(self) -> list[int]:
        return list(dict.fromkeys(run.run.seed for run in self.runs))

    def evals(self) -> pd.DataFrame:
        """Every run's evaluations with ``label`` and ``seed`` first."""
        return pd.concat([run.run.evals.assign(label=run.label, seed=run.run.seed) for run in self.runs],
                         ignore_index=True)

    def history(self) -> pd.DataFrame:
        return pd.concat([run.run.geco_phase.assign(label=run.label, seed=run.run.seed) for run in self.runs],
                         ignore_index=True)

    def summary(self) -> pd.DataFrame:
        """Per controller: mean and min-max over seeds of each number, and in how many seeds it met tau."""
        frame, rows = self.frame(), []
        for label, group in frame.groupby("label", sort=False):
            row = {"label": label, "seeds": len(group), "met_tau": int(group["met_tau"].sum())}
            for key in ("end_kept_per_query", "heldout_ce", "exact_match", "evals_over_tau", "beta_collapses",
                        "beta_off_clamp_step", "steps_near_end", "wall_time_s"):
                values = group[key].dropna()
                row[key] = spread(values).to_dict() if len(values) else None
            rows.append(row)
        return pd.DataFrame(rows)

    def table(self) -> pd.DataFrame:
        """The comparison as displayed: each controller's mean with its min-max over seeds."""
        formats = {"end_kept_per_query": ("end point (keys/query)", lambda v: f"{v:.3f}"),
                   "heldout_ce": ("held-out CE", lambda v: f"{v:.4f}"),
                   "exact_match": ("exact match (%)", lambda v: f"{100 * v:.1f}"),
                   "evals_over_tau": ("evals over τ", _whole_percent),
                   "beta_collapses": ("β collapses", lambda v: f"{v:.2g}"),
                   "steps_near_end": ("steps to 10 % of end", lambda v: f"{v:.0f}"),
                   "wall_time_s": ("wall time (s)", lambda v: f"{v:.0f}")}
        summary, rows = self.summary(), []
        if summary["exact_match"].isna().all():
            del formats["exact_match"]
        for _, row in summary.iterrows():
            cells = {"met τ (seeds)": f"{row['met_tau']} of {row['seeds']}"}
            for key, (title, fmt) in formats.items():
                cells[title] = "–" if row[key] is None else table_cell(spread(row[key]["values"]), fmt)
            rows.append(cells)
        n = len(self.seeds)
        return pd.DataFrame(rows, index=pd.Index(self.labels, name=f"controller (mean, min–max over {n} seeds)"))

    def best(self) -> str | None:
        """The controller that met tau in every seed with the fewest kept keys per query on average."""
        summary = self.summary()
        feasible = summary[summary["met_tau"] == summary["seeds"]]
        if feasible.empty:
            return None
        means = feasible["end_kept_per_query"].map(lambda s: s["mean"])
        return str(feasible.loc[means.idxmin(), "label"])

    def _describe(self, row) -> str:
        if row["end_kept_per_query"] is None:
            return f"{row['label']} never met τ"
        end = spread(row["end_kept_per_query"]["values"]).summary(lambda v: f"{v:.3f}")
        over = spread(row["evals_over_tau"]["values"]).summary(_whole_percent)
        met = "" if row["met_tau"] == row["seeds"] else f" (met τ in {row['met_tau']} of {row['seeds']} seeds)"
        collapses = "" if row["beta_collapses"] is None else (
            f", β collapsed {spread(row['beta_collapses']['values']).summary(lambda v: f'{v:.2g}')} times")
        if row["beta_off_clamp_step"] is not None:
            off = spread(row["beta_off_clamp_step"]["values"]).summary(lambda v: f"{v:.0f}")
            collapses += f" and first left its lower clamp at step {off}"
        return f"{row['label']} ended at {end} keys per query{met}, {over} of evaluations over τ{collapses}"

    @property
    def sentence(self) -> str:
        summary = self.summary()
        best = self.best()
        lead = (f"On {self.model}, the controller that met τ in every seed with the fewest keys per query is {best}. "
                if best else f"On {self.model}, no controller met τ in every seed. ")
        means = {row["label"]: row["end_kept_per_query"]["mean"] for _, row in summary.iterrows()
                 if row["end_kept_per_query"] is not None}
        if best and best != "GECO" and "GECO" in means:
            lead += f"GECO's end point is {means['GECO'] / means[best]:.1f}× as many keys per query as {best}'s. "
        return lead + "; ".join(self._describe(row) for _, row in summary.iterrows()) + "."

    @property
    def claim_sentence(self) -> str:
        summary = self.summary().set_index("label")
        parts = []
        for label in [x for x in ("GECO", "PI") if x in summary.index]:
            row = summary.loc[label]
            end = "never met τ" if row["end_kept_per_query"] is None else (
                f"{row['end_kept_per_query']['mean']:.3f} keys per query")
            collapses = row["beta_collapses"]["mean"] if row["beta_collapses"] else 0.0
            parts.append(f"{label} {end}, {collapses:.2g} β collapses")
        best = self.best()
        return (f"{self.model}, {len(self.seeds)} seeds: " + "; ".join(parts)
                + f"; best end point meeting τ in every seed: {best or 'none'}")
