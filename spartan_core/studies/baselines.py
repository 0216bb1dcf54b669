"""Chapter 7's two questions. Is the learned gate better than a fixed mask rule at the same kept keys per query?
:func:`pareto` runs each policy of :mod:`~spartan_core.mechanism.policies` at several budgets through the one recipe
(``SparseRecipe(policy=..., keys_per_query=...)``), as is and fine-tuned with the pattern fixed, against the model's
default SPARTAN run; :class:`Pareto` compares them at the gate's budget. Is GECO a good controller of the
multiplier? :func:`compare_controllers` post-trains one dense model under GECO, PI and fixed penalties for several
post-training seeds; :class:`ControllerComparison` reports each controller's end point, evaluations over τ, β
collapses, steps to its end point and wall time over the seeds. :func:`baselines_claim` and :func:`controllers_claim`
judge the two claims."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..claims import Claim
from ..formatting import (CE, COUNT, DECIMAL2, DECIMAL3, DECIMAL4, PERCENT, PERCENT1, PERCENT_WHOLE, SETTING, TIMES,
                          WHOLE, ratio)
from ..mechanism.policies import INTEGER_POLICIES, POLICIES
from ..training.evaluate import HeldOut
from ..training.posttrain import DENSE_CONTROL, PostTrainResult
from .common import load_run
from .seeds import Seeds, Spread, spread, table_cell
from .training_dynamics import GecoRun, geco_run

__all__ = ["ParetoPoint", "Pareto", "policy_budgets", "pareto", "steps_sentence", "baselines_claim", "ControllerRun",
           "ControllerComparison", "compare_controllers", "controllers_claim"]

LEARNED = "SPARTAN gate"
BASELINES_RULE = ("reproduced when the gate beats all five fixed policies on every model; partly on some; cannot test "
                  "here while a fixed policy was fine-tuned for fewer steps than the gate post-trained (a win could "
                  "then be the gate's longer training, not its choice of edges)")
CONTROLLERS_RULE = "reproduced when GECO reaches the best end point meeting τ; partly when another controller does"
# each number summarised over a controller's seeds: its column in the table (None: not shown) and its format
SUMMARY = {"end_kept_per_query": ("end point (keys/query)", DECIMAL3), "heldout_ce": ("held-out CE", DECIMAL4),
           "exact_match": ("exact match", PERCENT1), "evals_over_tau": ("evals over τ", PERCENT_WHOLE),
           "beta_collapses": ("β collapses", COUNT), "beta_off_clamp_step": (None, WHOLE),
           "steps_near_end": ("steps to 10 % of end", WHOLE), "wall_time_s": ("wall time (s)", WHOLE)}


@dataclass(frozen=True)
class ParetoPoint:
    """One model on held-out data: a fixed ``policy`` at ``budget`` keys per query, ``as is`` or ``fine-tuned``,
    or the learned gate (``policy`` :data:`LEARNED`, stage ``learned``, no budget). ``steps`` are its training
    steps after the dense model (0 as is); ``exact_match`` only where the task has one (the addition toy)."""

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

    @classmethod
    def of(cls, model: str, policy: str, stage: str, budget: float | None, held: HeldOut,
           run: PostTrainResult | None = None) -> "ParetoPoint":
        return cls(model, policy, stage, budget, held.kept_per_query, held.kept_fraction, held.ce,
                   held.exact_match_all, len(run.history) if run else 0, run.wall_time_s if run else 0.0)


def policy_budgets(policy: str, budgets) -> list[float]:
    """The budgets a policy runs at: a whole-number policy (top-k, window, sink) only the whole ones."""
    if policy not in POLICIES:
        raise ValueError(f"policies: must be among {', '.join(POLICIES)}, got {policy!r}")
    chosen = [float(b) for b in budgets if policy not in INTEGER_POLICIES or float(b) == int(b)]
    return [b for b in chosen if b >= 1] if policy == "sink" else chosen


def pareto(name: str, policies, budgets, recipe: dict, seed: int = 0, learned_recipe: dict | None = None,
           dense_steps: int | None = None) -> "Pareto":
    """On training seed ``seed``'s dense ``name``: the learned gate (the default recipe, or ``learned_recipe`` over
    it) and both points (as is, fine-tuned) of every policy of ``policies`` at each of its ``budgets``, where
    ``recipe`` sets the fine-tuning (its ``steps`` plus ``floor_steps`` are the steps with the pattern fixed)."""
    policies = list(policies)
    if not policies:
        raise ValueError("policies: need at least one fixed mask policy")
    gate, points = load_run(name, learned_recipe or {}, seed, dense_steps).run, []
    for policy in policies:
        for budget in policy_budgets(policy, budgets):
            run = load_run(name, {**recipe, "policy": policy, "keys_per_query": budget}, seed, dense_steps).run
            points += [ParetoPoint.of(name, policy, "as is", budget, run.before),
                       ParetoPoint.of(name, policy, "fine-tuned", budget, run.after, run)]
    learned = ParetoPoint.of(name, LEARNED, "learned", None, gate.after, gate)
    control = load_run(name, {**(learned_recipe or {}), "policy": DENSE_CONTROL}, seed, dense_steps).run.after
    return Pareto(name, [*points, learned], gate.dense.ce, gate.dense.exact_match_all, seed, control)


@dataclass(frozen=True)
class Pareto:
    """The fixed policies' points and the learned point of one model, beside the dense checkpoint and the gate's
    compute-matched control (its steps with no gate: None where not loaded)."""

    model: str
    points: list[ParetoPoint]
    dense_ce: float
    dense_exact_match: float | None = None
    seed: int = 0
    control: HeldOut | None = None

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
        learned, rows = self.learned, []
        for policy in self.policies:
            for stage in ("as is", "fine-tuned"):
                curve = self.curve(policy, stage)
                rows.append({"policy": policy, "stage": stage, "ce_at_learned_keys": self.ce_at_learned(policy, stage),
                             "fewest_keys": curve[0].kept_per_query, "ce_at_fewest_keys": curve[0].heldout_ce,
                             "beats_learned": any(p.kept_per_query <= learned.kept_per_query
                                                  and p.heldout_ce <= learned.heldout_ce for p in curve)})
        return pd.DataFrame(rows)

    def table(self) -> pd.DataFrame:
        """Every run as displayed: one row per policy and budget (the learned gate last), the fine-tuned model's
        kept keys and edges, and held-out CE (and exact match) as is and fine-tuned."""
        rows = {}
        for p in sorted(self.points, key=lambda p: (p.stage == "learned", p.policy, p.budget or 0)):
            row = rows.setdefault((p.policy, "learned" if p.budget is None else SETTING(p.budget)), {})
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
        ce, keys, policy = self.learned.heldout_ce, self.learned.kept_per_query, row["policy"]
        if row["beats_learned"]:
            return f"{policy} beats the learned gate: some budget keeps no more keys at no higher CE"
        if not pd.isna(row["ce_at_learned_keys"]):
            at = row["ce_at_learned_keys"]
            return f"{policy} reaches CE {CE(at)} at that budget ({ratio(at / ce)} the gate's)"
        if row["fewest_keys"] > keys:
            fewest, at = row["fewest_keys"], row["ce_at_fewest_keys"]
            return (f"{policy} already has CE {CE(at)} at its smallest budget, {DECIMAL2(fewest)} keys per query "
                    f"({ratio(at / ce)} the gate's CE with {TIMES(fewest / keys)} its keys)")
        return f"{policy} ran only at budgets above the gate's, with no point better on both"

    @property
    def sentence(self) -> str:
        learned, table = self.learned, self.comparison()
        tuned = table[table["stage"] == "fine-tuned"]
        winners = list(tuned.loc[tuned["beats_learned"], "policy"])
        exact = "" if learned.exact_match is None else f", exact match {PERCENT1(learned.exact_match)}"
        head = (f"{self.model}: the learned gate keeps {DECIMAL2(learned.kept_per_query)} keys per query "
                f"({PERCENT(learned.kept_fraction)} of edges) at held-out CE {CE(learned.heldout_ce)}{exact} "
                f"(dense checkpoint {CE(self.dense_ce)}"
                + ("" if self.control is None else f"; its compute-matched control {CE(self.control.ce)}") +
                "). Fine-tuned at fixed patterns, ")
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
        return (f"{self.model}: learned gate {DECIMAL2(learned.kept_per_query)} keys per query at CE "
                f"{CE(learned.heldout_ce)}; {len(beaten)} of {len(self.policies)} fine-tuned fixed policies have "
                f"no point with as few keys and as low a CE (policies fine-tuned "
                f"{', '.join(map(str, self.tuned_steps))} steps, the gate post-trained {learned.steps})")


def steps_sentence(paretos) -> str:
    """How much training each side of the comparison had: the fixed policies' fine-tuning against the learned
    gate's post-training (its floor phase included)."""
    parts = [f"{p.model}: {', '.join(map(str, p.tuned_steps))} against {p.learned.steps}" for p in paretos]
    less = all(point.steps <= p.learned.steps for p in paretos for point in p.points)
    verdict = (" The policies had no more training than the gate, so the comparison can only favour the gate."
               if less else " Some policy had more training than the gate.")
    return ("Training steps after the dense model, fixed policies' fine-tuning against the learned gate's "
            "post-training: " + "; ".join(parts) + "." + verdict)


def baselines_claim(paretos: dict[str, Pareto]) -> Claim:
    """The baselines claim over every model's comparison (``name -> Pareto``): reproduced when the gate beats all
    five fine-tuned policies on every model, partly on some, not reproduced on none."""
    if not paretos:
        raise ValueError("paretos: need at least one model's comparison")
    beaten = {name: p.beaten_policies() for name, p in paretos.items()}
    counts = [len(policies) for policies in beaten.values()]
    shorter = {name: p.tuned_steps for name, p in paretos.items() if min(p.tuned_steps) < p.learned.steps}
    verdict = ("cannot test here" if shorter else "reproduced" if all(c == 5 for c in counts) else
               "partly" if any(counts) else "not reproduced")
    values = {"seed": next(iter(paretos.values())).seed, "models": list(paretos), "beaten": beaten,
              "fine_tuned_fewer_steps": shorter}
    return Claim("baselines", "; ".join(p.claim_sentence for p in paretos.values()), values, verdict, BASELINES_RULE)


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
                 None if verdict is None else CONTROLLERS_RULE)
