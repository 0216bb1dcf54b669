"""Chapter 6 across its tasks: every task's dense / sparse ratios beside the paper's ranges, the claims they
judge, and whether gradient attributions rank edges like exact patching (the sizes themselves are measured by
:mod:`.circuit_size`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from ..claims import Claim
from ..formatting import DECIMAL2, PERCENT_WHOLE, SIGNIFICANT, TIMES
from .circuit_size import PAPER_RATIOS, RATIO_COLUMNS, THRESHOLD, CircuitSetup, SizeRatio, TaskSizes
from .common import Unavailable
from .seeds import spread_table


@dataclass(frozen=True)
class SizeComparison:
    """Every task of the chapter, measured or unavailable here, and their ratios beside the paper's ranges."""

    tasks: dict
    method: str
    ablations: Sequence[str]
    threshold: float = THRESHOLD

    @property
    def measured(self) -> list[TaskSizes]:
        return [t for t in self.tasks.values() if isinstance(t, TaskSizes)]

    def needed_table(self) -> pd.DataFrame:
        return pd.concat([t.needed for t in self.measured], ignore_index=True)

    def ratio_table(self) -> pd.DataFrame:
        """One row per (task, ablation, kind): :meth:`SizeRatio.row`."""
        return pd.DataFrame([r.row() for t in self.measured for r in t.ratios], columns=RATIO_COLUMNS)

    def draws_table(self) -> pd.DataFrame:
        """Every draw: task, training seed, prompt set, ablation, kind, dense and sparse counts and their ratio."""
        frames = [t.draws() for t in self.measured]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def seed_table(self) -> pd.DataFrame:
        """Per task, ablation, kind and training seed: the ratio's mean, min and max over its prompt sets."""
        draws = self.draws_table()
        if draws.empty:
            return pd.DataFrame()
        keys = ["task", "ablation", "kind", "train_seed"]
        return spread_table(draws.dropna(subset=["ratio"]), keys, ["ratio"]).sort_index()

    def pending(self) -> list[str]:
        """The unavailable tasks, grouped by model and reason: ``"ioi, greater-than on gpt2: pending (reason)"``."""
        groups = {}
        for task, result in self.tasks.items():
            if isinstance(result, Unavailable):
                groups.setdefault((result.model, result.reason), []).append(task)
        return [f"{', '.join(tasks)} on {model}: pending ({reason})" for (model, reason), tasks in groups.items()]

    def headline(self, kind: str) -> list[tuple[SizeRatio, bool]]:
        """The headline ratio of ``kind`` of each measured task (its first ablation's), and whether the task counts."""
        return [(r, t.counts) for t in self.measured for r in t.ratios
                if r.kind == kind and r.ablation == self.ablations[0]]

    @property
    def tasks_sentence(self) -> str:
        """A markdown list: each measured task's ratios, then the tasks not measured here."""
        pending = self.pending()
        sentences = [t.sentence for t in self.measured] + ([f"Not measured: {'; '.join(pending)}."] if pending else [])
        return "\n".join(f"- {sentence}" for sentence in sentences)

    @property
    def variation_sentence(self) -> str:
        """Which source of variation dominates each headline ratio (training seeds or prompt sets)."""
        parts = [f"{r.task}, {r.kind} ({r.ablation}): {r.variation}" for kind in ("edges", "heads")
                 for r, _ in self.headline(kind) if r.variation]
        if not parts:
            return ("Only one of training seeds and prompt sets varies in this run, so the spread cannot be split "
                    "between them.")
        return "Where the spread comes from: " + "; ".join(parts) + "."

    @property
    def sentence(self) -> str:
        table = self.draws_table()
        if table.empty or table["ratio"].isna().all():
            return "No task could be measured here, so there is no ratio to set beside the paper's."
        parts = []
        for reported in PAPER_RATIOS:
            ours = table[table["kind"] == reported.kind]["ratio"].dropna()
            inside = int(((ours >= reported.low) & (ours <= reported.high)).sum())
            parts.append(f"{reported.kind}: this run's draws (every task, ablation, training seed and prompt set) "
                         f"run from {TIMES(ours.min())} to {TIMES(ours.max())}, {inside} of {len(ours)} inside the "
                         f"paper's {SIGNIFICANT(reported.low)}–{SIGNIFICANT(reported.high)}×")
        sentence = "; ".join(parts)
        return sentence[0].upper() + sentence[1:] + "."

    def to_metrics(self) -> dict:
        tasks = {task: ({"status": "pending", "model": r.model, "reason": r.reason} if isinstance(r, Unavailable)
                        else r.to_metrics()) for task, r in self.tasks.items()}
        return {"tasks": tasks, "ratios_at_threshold": self.ratio_table().to_dict(orient="records"),
                "ratios_by_draw": self.draws_table().to_dict(orient="records"),
                "method": self.method, "threshold": self.threshold}


# claim circuit_<kind>: (the ratio every task that counts must reach, the one a task must reach for "partly", rule)
CLAIM_RULES = {
    "heads": (1.4, 1.4, "reproduced when every task that counts needs ≥ 1.4× fewer heads (the paper's lowest); "
                        "partly when one needs ≥ 1.4×"),
    "edges": (5.4, 2.0, "reproduced when every task that counts needs ≥ 5.4× fewer edges (the paper's lowest); "
                        "partly when one needs ≥ 2×"),
}


def circuit_claim(comparison: SizeComparison, kind: str) -> Claim:
    """Claim ``circuit_<kind>``: each task's headline ratio over draws and over training seeds, and the verdict of
    the claim's rule on the mean ratio of the tasks that count."""
    parts, values = [], {}
    for r, counts in comparison.headline(kind):
        both = r.train_seeds > 1 and r.prompt_sets > 1
        seeds = f"; per-training-seed means {r.over_seeds.text(TIMES)}" if both else ""
        caveat = "" if counts else " (does not count: the dense model fails the task)"
        parts.append(f"{r.task} on {r.model}: {r.text} fewer {kind}{seeds}{caveat}")
        values[r.task] = {"over_draws": r.over_draws.to_dict(), "over_training_seeds": r.over_seeds.to_dict(),
                          "train_seeds": r.train_seeds, "prompt_sets": r.prompt_sets, "counts": counts}
    sentence = (f"dense / sparse at {PERCENT_WHOLE(comparison.threshold)} explained effect, {comparison.method}, "
                f"{comparison.ablations[0]} ablation: " + "; ".join(parts + comparison.pending()))
    every, some, rule = CLAIM_RULES[kind]
    ratios = [values[task]["over_draws"]["mean"] for task in values if values[task]["counts"]]
    verdict = ("cannot test here" if not ratios else "reproduced" if all(r >= every for r in ratios)
               else "partly" if any(r >= some for r in ratios) else "not reproduced")
    headline = "; ".join(f"{r.task}: {r.over_draws.short(TIMES)} fewer" + ("" if counts else " (does not count)")
                         for r, counts in comparison.headline(kind)) or "no task measured"
    return Claim(f"circuit_{kind}", sentence, {"tasks": values}, verdict, rule, headline)


@dataclass(frozen=True)
class MethodAgreement:
    """Spearman rank correlation of gradient edge scores with exact patching (resample ablation), per model and
    method, on ``prompts`` prompts of ``task``, for the models of one training seed."""

    prompts: int
    spearman: dict
    train_seed: int = 0
    task: str = "addition"

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.spearman).rename_axis(index="method", columns="model")

    @property
    def sentence(self) -> str:
        parts = [f"{model}: " + ", ".join(f"{method} {DECIMAL2(rho)}" for method, rho in methods.items())
                 for model, methods in self.spearman.items()]
        return (f"{self.task}: rank correlation with exact patching on {self.prompts} prompts, models of training "
                f"seed {self.train_seed} only: {'; '.join(parts)}.")


def agreement_table(agreements: Sequence[MethodAgreement]) -> pd.DataFrame | None:
    """Every task's agreement as one table (task and method down, model across); None when none was measured."""
    if not agreements:
        return None
    return pd.concat({a.task: a.table() for a in agreements}, names=["task"])


def method_agreement(setup: CircuitSetup, seed: int, methods: Sequence[str] = ("eap", "eap-ig")) -> MethodAgreement:
    """Agreement on the prompt set ``seed`` for ``setup``'s models (one training seed)."""
    from ..circuits import ComponentGraph, rank_agreement

    task = setup.make_task(seed)
    result = {label: rank_agreement(ComponentGraph(model), task, methods) for label, model in setup.models.items()}
    return MethodAgreement(len(task), result, int(setup.train_seed), setup.task)
