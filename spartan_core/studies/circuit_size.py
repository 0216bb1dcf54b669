"""Chapter 6's question: once attention is sparse, is the circuit that does a task smaller? Edges and heads needed
for 90 % of the effect, dense against sparse over several prompt sets, beside the paper's own ranges; and whether
the gradient attributions rank edges like exact patching."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .. import zoo
from .common import Unavailable, load_pair

__all__ = ["CIRCUIT_TASKS", "THRESHOLD", "PaperRange", "PAPER_RATIOS", "paper_table", "task_model", "CircuitSetup",
           "circuit_setup", "SizeRatio", "TaskSizes", "measure_sizes", "SizeComparison", "MethodAgreement",
           "method_agreement"]

CIRCUIT_TASKS = ("addition", "induction", "ioi", "greater-than")
THRESHOLD = 0.9


@dataclass(frozen=True)
class PaperRange:
    """A range the paper reports (typed from the paper, shown labelled as the paper's): dense / sparse circuit size
    at 90 % explained effect, over its tasks."""

    kind: str
    low: float
    high: float


# The paper's ranges, the one place they are typed: Greater-Than and IOI on GPT-2, Docstring and a long IOI on OLMo-7B.
PAPER_RATIOS = (PaperRange("heads", 1.4, 4.5), PaperRange("edges", 5.4, 97.0))
PAPER_TASKS = "Greater-Than and IOI on GPT-2, Docstring and a long IOI on OLMo-7B"


def paper_table() -> pd.DataFrame:
    return pd.DataFrame([asdict(r) for r in PAPER_RATIOS]).set_index("kind").assign(tasks=PAPER_TASKS)


def task_model(task: str, lm: str, gpt2_model: str) -> str:
    """The model a task runs on: the addition toy, the profile's language model (induction), GPT-2 (its BPE tasks)."""
    if task not in CIRCUIT_TASKS:
        raise ValueError(f"tasks: choose from {CIRCUIT_TASKS}, got {task!r}")
    return {"addition": "addition-4l", "induction": lm}.get(task, gpt2_model)


@dataclass(frozen=True)
class CircuitSetup:
    """One task on one model: the dense and sparse models, ``make_task(seed)`` giving a prompt set, and the sparse
    model's kept fraction of attention edges."""

    task: str
    model: str
    models: dict
    make_task: Callable
    sparse_kept_fraction: float


def circuit_setup(task: str, model: str, *, n_prompts: int, dense_steps: int = 0, sparse_steps: int = 0,
                  lm_sparse_steps: int = 0, lm_floor_steps: int = -1,
                  induction_half: int = 8) -> CircuitSetup | Unavailable:
    """Dense and sparse copies of ``model`` (a text LM takes the ``lm_`` recipe) and the prompt-set generator."""
    from .. import circuits
    from ..data.induction import random_token_range

    text = zoo.entry_for(model).text
    pair = load_pair(model, dense_steps=dense_steps, sparse_steps=lm_sparse_steps if text else sparse_steps,
                     floor_steps=lm_floor_steps if text else -1)
    if isinstance(pair, Unavailable):
        return pair
    dense = pair.dense.model.eval()
    if task == "addition":
        def make_task(seed):
            return circuits.addition_task(n_prompts, seed=seed)
    elif task == "induction":
        low, bos = random_token_range(pair.dense.tokenizer, dense.config.vocab_size)

        def make_task(seed):
            return circuits.induction_task(dense.config.vocab_size, n_prompts, half=induction_half, seed=seed, low=low,
                                           prefix=() if bos is None else (bos,))
    else:
        make = circuits.ioi_task if task == "ioi" else circuits.greater_than_task

        def make_task(seed):
            return make(n_prompts, seed=seed)
    return CircuitSetup(task, model, {"dense": dense, "sparse": pair.sparse.model.eval()}, make_task,
                        pair.metrics["sparse"]["kept_fraction"])


@dataclass(frozen=True)
class SizeRatio:
    """Dense / sparse circuit size at the threshold: mean, min and max over ``prompt_sets`` prompt sets."""

    task: str
    model: str
    ablation: str
    kind: str
    ratio_mean: float
    ratio_min: float
    ratio_max: float
    prompt_sets: int


@dataclass(frozen=True)
class TaskSizes:
    """Circuit sizes of one task: ``needed`` and ``curves`` of :func:`spartan_core.circuits.size_study` and the
    dense / sparse ratios at ``threshold``."""

    task: str
    model: str
    method: str
    threshold: float
    needed: pd.DataFrame
    curves: pd.DataFrame
    ratios: list
    sparse_kept_fraction: float

    def _at_threshold(self) -> pd.DataFrame:
        return self.needed[np.isclose(self.needed["threshold"], self.threshold)]

    def sizes_table(self) -> pd.DataFrame:
        """Edges / heads needed at the threshold: mean, min and max over prompt sets, per ablation, kind, model."""
        return self._at_threshold().groupby(["ablation", "kind", "model"])["needed"].agg(["mean", "min", "max"])

    def effect_table(self) -> pd.DataFrame:
        """The effect being explained, m(model) - m(empty), mean over prompt sets."""
        at = self._at_threshold()
        effect = (at["m_model"] - at["m_empty"]).groupby([at["ablation"], at["kind"], at["model"]]).mean()
        return effect.rename("effect").to_frame()

    def to_metrics(self) -> dict:
        sizes, effect = self.sizes_table()["mean"], self.effect_table()["effect"]

        def nested(series):
            out = {}
            for (ablation, kind, model), value in series.items():
                out.setdefault(ablation, {}).setdefault(kind, {})[model] = float(value)
            return out

        return {"status": "measured", "model": self.model, "sparse_kept_fraction": self.sparse_kept_fraction,
                "needed_at_threshold": nested(sizes), "effect": nested(effect)}

    @property
    def sentence(self) -> str:
        parts = [f"{r.ratio_mean:.1f}× fewer {r.kind} ({r.ablation} ablation)" for r in self.ratios]
        sentence = (f"{self.task} on {self.model}: to explain {self.threshold:.0%} of the effect the sparse model "
                    f"needs {', '.join(parts)} than the dense one, mean over {self.ratios[0].prompt_sets} "
                    f"prompt set(s).")
        effect = self.effect_table()["effect"]
        dense = effect.xs("dense", level="model").abs().min()
        sparse = effect.xs("sparse", level="model").abs().max()
        if sparse < 1e-2 * dense:
            sentence += (f" But the sparse model has almost no effect to explain (|m(model) − m(empty)| ≤ "
                         f"{sparse:.3f} against at least {dense:.3f} dense), so these ratios say little about "
                         f"circuit size.")
        return sentence


def measure_sizes(setup: CircuitSetup, seeds: Sequence[int], *, method: str, ablations: Sequence[str], points: int,
                  threshold: float = THRESHOLD) -> TaskSizes:
    from ..circuits import size_ratios, size_study

    needed, curves = size_study(setup.models, setup.make_task, seeds, method=method, ablations=ablations,
                                points=points)
    table = size_ratios(needed, "dense", threshold).xs("sparse", level="model")
    ratios = [SizeRatio(setup.task, setup.model, ablation, kind, float(row["ratio_mean"]), float(row["ratio_min"]),
                        float(row["ratio_max"]), int(row["prompt_sets"])) for (ablation, kind), row in table.iterrows()]
    return TaskSizes(setup.task, setup.model, method, threshold, needed.assign(task=setup.task), curves, ratios,
                     setup.sparse_kept_fraction)


@dataclass(frozen=True)
class SizeComparison:
    """Every task of the chapter, measured or unavailable here, and their ratios beside the paper's ranges."""

    tasks: dict
    method: str
    ablations: list
    threshold: float = THRESHOLD

    @property
    def measured(self) -> list:
        return [t for t in self.tasks.values() if isinstance(t, TaskSizes)]

    def needed_table(self) -> pd.DataFrame:
        return pd.concat([t.needed for t in self.measured], ignore_index=True)

    def ratio_table(self) -> pd.DataFrame:
        columns = [f.name for f in SizeRatio.__dataclass_fields__.values()]
        return pd.DataFrame([asdict(r) for t in self.measured for r in t.ratios], columns=columns)

    def _pending(self) -> list[str]:
        """The unavailable tasks, grouped by model and reason: ``"ioi, greater-than on gpt2: pending (reason)"``."""
        groups = {}
        for task, result in self.tasks.items():
            if isinstance(result, Unavailable):
                groups.setdefault((result.model, result.reason), []).append(task)
        return [f"{', '.join(tasks)} on {model}: pending ({reason})" for (model, reason), tasks in groups.items()]

    def claim_line(self, kind: str) -> str:
        parts = []
        for result in self.measured:
            ratio = next(r for r in result.ratios if r.kind == kind and r.ablation == self.ablations[0])
            spread = f" (prompt sets: {ratio.ratio_min:.1f}–{ratio.ratio_max:.1f}×)" if ratio.prompt_sets > 1 else ""
            parts.append(f"{result.task} on {result.model}: {ratio.ratio_mean:.1f}× fewer {kind}{spread}")
        return (f"dense / sparse at {self.threshold:.0%} explained effect, {self.method}, {self.ablations[0]} "
                f"ablation: " + "; ".join(parts + self._pending()))

    @property
    def tasks_sentence(self) -> str:
        """Each measured task's ratios, then the tasks not measured here."""
        pending = self._pending()
        sentences = [t.sentence for t in self.measured] + ([f"Not measured: {'; '.join(pending)}."] if pending else [])
        return " ".join(sentences)

    @property
    def sentence(self) -> str:
        table = self.ratio_table()
        if table.empty:
            return "No task could be measured here, so there is no ratio to set beside the paper's."
        parts = []
        for reported in PAPER_RATIOS:
            ours = table[table["kind"] == reported.kind]["ratio_mean"]
            inside = int(((ours >= reported.low) & (ours <= reported.high)).sum())
            parts.append(f"{reported.kind}: this run's ratios run from {ours.min():.1f}× to {ours.max():.1f}× "
                         f"({inside} of {len(ours)} inside the paper's {reported.low:g}–{reported.high:g}×)")
        sentence = "; ".join(parts)
        return sentence[0].upper() + sentence[1:] + "."

    def to_metrics(self) -> dict:
        tasks = {task: ({"status": "pending", "model": r.model, "reason": r.reason} if isinstance(r, Unavailable)
                        else r.to_metrics()) for task, r in self.tasks.items()}
        return {"tasks": tasks, "ratios_at_threshold": self.ratio_table().to_dict(orient="records"),
                "method": self.method, "threshold": self.threshold}


@dataclass(frozen=True)
class MethodAgreement:
    """Spearman rank correlation of gradient edge scores with exact patching (resample ablation), per model and
    method, on ``prompts`` addition problems."""

    prompts: int
    spearman: dict

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.spearman).rename_axis(index="method", columns="model")

    @property
    def sentence(self) -> str:
        parts = [f"{model}: " + ", ".join(f"{method} {rho:.2f}" for method, rho in methods.items())
                 for model, methods in self.spearman.items()]
        return f"Rank correlation with exact patching on {self.prompts} problems: {'; '.join(parts)}."


def method_agreement(setup: CircuitSetup, seed: int, methods: Sequence[str] = ("eap", "eap-ig")) -> MethodAgreement:
    from ..circuits import ComponentGraph, attribute, spearman

    task = setup.make_task(seed)
    result = {}
    for label, model in setup.models.items():
        graph = ComponentGraph(model)
        exact = attribute(graph, task, "exact").scores.abs()
        result[label] = {m: spearman(attribute(graph, task, m).scores.abs(), exact) for m in methods}
    return MethodAgreement(len(task), result)
