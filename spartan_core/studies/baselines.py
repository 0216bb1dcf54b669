"""Chapter 7's first question: is the learned gate better than a fixed mask rule at the same kept keys per query?
:func:`pareto` runs each policy of :mod:`~spartan_core.mechanism.policies` at several budgets through the one recipe
(``SparseRecipe(policy=..., keys_per_query=...)``), as is and fine-tuned with the pattern fixed, against the model's
default SPARTAN run; :class:`Pareto` compares them at the gate's budget, and :func:`baselines_claim` judges the
claim. The chapter's second question, whether GECO is a good controller of the multiplier, is
:mod:`.controller_comparison`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..claims import Claim
from ..formatting import CE, DECIMAL2, PERCENT, PERCENT1, SETTING, TIMES, ratio
from ..mechanism.policies import INTEGER_POLICIES, POLICIES
from ..training.evaluate import HeldOut
from ..training.posttrain import DENSE_CONTROL, PostTrainResult
from .common import load_run

__all__ = ["ParetoPoint", "Pareto", "policy_budgets", "pareto", "steps_sentence", "baselines_claim"]

LEARNED = "SPARTAN gate"
BASELINES_RULE = ("reproduced when the gate beats all five fixed policies on every model; partly on some; cannot test "
                  "here while a fixed policy was fine-tuned for fewer steps than the gate post-trained (a win could "
                  "then be the gate's longer training, not its choice of edges)")


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
    headline = "; ".join(f"{name}: gate beats {len(policies)} of {len(paretos[name].policies)} policies"
                         for name, policies in beaten.items())
    return Claim("baselines", "; ".join(p.claim_sentence for p in paretos.values()), values, verdict, BASELINES_RULE,
                 headline)
