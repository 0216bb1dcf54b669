"""Chapter 6's question: once attention is sparse, is the circuit that does a task smaller? Edges and heads needed
for 90 % of the effect, dense against sparse, beside the paper's own ranges; and whether the gradient attributions
rank edges like exact patching.

A toy retrained is another model, so every number here is measured for several training seeds (each its own dense
toy and sparse copy) times several prompt sets, one *draw* each, and reported as the mean with its min-max over
those draws, beside the spread of the per-training-seed means (which says how much of it the training seed makes)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from .. import zoo
from .common import Unavailable, load_pair
from ..formatting import PERCENT, SIGNIFICANT, TIMES
from .seeds import Spread, spread, spread_table

__all__ = ["CIRCUIT_TASKS", "CODE_MODEL", "heldout_names", "THRESHOLD", "PaperRange", "PAPER_RATIOS", "paper_table", "task_model", "CircuitSetup",
           "circuit_setup", "CHANCE", "PASS_FACTOR", "task_performance", "performance_sentence", "SizeRatio", "TaskSizes", "measure_sizes", "combine_sizes", "measure_task",
           "draws_text", "SizeComparison", "MethodAgreement", "method_agreement", "exact_affordable"]

CIRCUIT_TASKS = ("addition", "induction", "docstring", "ioi", "greater-than")
CODE_MODEL = "python-lm"  # the Docstring task needs a model of Python code
THRESHOLD = 0.9
_DRAW_KEYS = ["train_seed", "prompt_seed", "ablation", "kind"]


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
    """The model a task runs on: the addition toy, the profile's language model (induction), the code model
    (Docstring), GPT-2 (its BPE tasks)."""
    if task not in CIRCUIT_TASKS:
        raise ValueError(f"tasks: choose from {CIRCUIT_TASKS}, got {task!r}")
    return {"addition": "addition-4l", "induction": lm, "docstring": CODE_MODEL}.get(task, gpt2_model)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def draws_text(values: Spread, train_seeds: int, prompt_sets: int, fmt: Callable[[float], str] = TIMES) -> str:
    """``"4.0x (2.9x–5.8x over 3 training seeds x 3 prompt sets)"``: the mean and min-max of ``values``, one per
    (training seed, prompt set) draw; fewer values than draws (a threshold never reached) are counted as such."""
    grid = f"{_count(train_seeds, 'training seed')} x {_count(prompt_sets, 'prompt set')}"
    if values.n < train_seeds * prompt_sets:
        grid = f"{values.n} of {train_seeds * prompt_sets} draws of {grid}"
    if values.n == 1:
        return f"{fmt(values.mean)} ({grid})"
    return f"{fmt(values.mean)} ({fmt(values.low)}–{fmt(values.high)} over {grid})"


@dataclass(frozen=True)
class CircuitSetup:
    """One task on one model of training seed ``train_seed``: the dense and sparse models, ``make_task(seed)``
    giving a prompt set, and the sparse model's kept fraction of attention edges."""

    task: str
    model: str
    models: dict
    make_task: Callable
    sparse_kept_fraction: float
    train_seed: int = 0


def circuit_setup(task: str, model: str, *, n_prompts: int, seed: int = 0, dense_steps: int = 0,
                  sparse_steps: int = 0, lm_sparse_steps: int = 0, lm_floor_steps: int = -1,
                  induction_half: int = 8) -> CircuitSetup | Unavailable:
    """Dense and sparse copies of ``model`` for training seed ``seed`` (a text LM takes the ``lm_`` recipe) and the
    prompt-set generator."""
    from .. import circuits
    from ..data.induction import random_token_range

    language_model = zoo.entry_for(model).language_model
    pair = load_pair(model, seed=seed, dense_steps=dense_steps,
                     sparse_steps=lm_sparse_steps if language_model else sparse_steps,
                     floor_steps=lm_floor_steps if language_model else -1)
    if isinstance(pair, Unavailable):
        return pair
    dense = pair.dense.model.eval()
    if task == "addition":
        def make_task(prompt_seed):
            return circuits.addition_task(n_prompts, seed=prompt_seed)
    elif task == "induction":
        low, bos = random_token_range(pair.dense.tokenizer, dense.config.vocab_size)

        def make_task(prompt_seed):
            return circuits.induction_task(dense.config.vocab_size, n_prompts, half=induction_half, seed=prompt_seed,
                                           low=low, prefix=() if bos is None else (bos,))
    elif task == "docstring":
        names = heldout_names(pair.dense)

        def make_task(prompt_seed):
            return circuits.docstring_task(pair.dense.tokenizer, names["arguments"], names["functions"], n_prompts,
                                           seed=prompt_seed)
    else:
        make = circuits.ioi_task if task == "ioi" else circuits.greater_than_task

        def make_task(prompt_seed):
            return make(n_prompts, seed=prompt_seed)
    return CircuitSetup(task, model, {"dense": dense, "sparse": pair.sparse.model.eval()}, make_task,
                        pair.after.kept_fraction, seed)


def heldout_names(loaded) -> dict[str, list[str]]:
    """Function and argument names of a code model's held-out modules (the Docstring task's names)."""
    from ..data.code import heldout_names as names_of

    return names_of(loaded.info["recipe"]["data"]["heldout_percent"])


@dataclass(frozen=True)
class SizeRatio:
    """Dense / sparse circuit size at the threshold of one (task, ablation, kind): ``over_draws`` one value per
    (training seed, prompt set), ``over_seeds`` the per-training-seed means; ``within`` the mean over training
    seeds of the min-max width over prompt sets (0 with one prompt set)."""

    task: str
    model: str
    ablation: str
    kind: str
    over_draws: Spread
    over_seeds: Spread
    train_seeds: int
    prompt_sets: int
    within: float

    @property
    def ratio_mean(self) -> float:
        return self.over_draws.mean

    @property
    def text(self) -> str:
        return draws_text(self.over_draws, self.train_seeds, self.prompt_sets)

    @property
    def seeds_text(self) -> str:
        return self.over_seeds.text(TIMES)

    @property
    def variation(self) -> str:
        """Which source of variation is the larger here: training seeds (the range of their means) or prompt sets
        (the mean width within one training seed); empty when only one of the two varies."""
        if self.train_seeds < 2 or self.prompt_sets < 2:
            return ""
        between = self.over_seeds.high - self.over_seeds.low
        larger = "the training seed moves" if between > self.within else "the prompt set moves"
        return (f"the per-training-seed means run {TIMES(self.over_seeds.low)}–{TIMES(self.over_seeds.high)} (a "
                f"width of {between:.1f}) against a mean width of {self.within:.1f} over the prompt sets of one "
                f"training seed, so {larger} it more")

    def row(self) -> dict:
        return {"task": self.task, "model": self.model, "ablation": self.ablation, "kind": self.kind,
                "ratio_mean": self.over_draws.mean, "ratio_min": self.over_draws.low,
                "ratio_max": self.over_draws.high, "draws": self.over_draws.n, "train_seeds": self.train_seeds,
                "prompt_sets": self.prompt_sets, "seed_mean_min": self.over_seeds.low,
                "seed_mean_max": self.over_seeds.high, "within_seed_width": self.within}


RATIO_COLUMNS = list(SizeRatio("", "", "", "", spread([1.0]), spread([1.0]), 1, 1, 0.0).row())


@dataclass(frozen=True)
class TaskSizes:
    """Circuit sizes of one task over its training seeds: ``needed`` and ``curves`` of
    :func:`spartan_core.circuits.size_study` with ``train_seed`` and ``prompt_seed`` columns, and each training
    seed's sparse kept fraction of attention edges."""

    task: str
    model: str
    method: str
    threshold: float
    needed: pd.DataFrame
    curves: pd.DataFrame
    sparse_kept_fraction: dict
    performance: pd.DataFrame = field(default_factory=pd.DataFrame)

    def _at_threshold(self) -> pd.DataFrame:
        return self.needed[np.isclose(self.needed["threshold"], self.threshold)]

    @property
    def train_seeds(self) -> list[int]:
        return sorted(self.needed["train_seed"].unique().tolist())

    @property
    def prompt_seeds(self) -> list[int]:
        return sorted(self.needed["prompt_seed"].unique().tolist())

    def draws(self) -> pd.DataFrame:
        """One row per training seed, prompt set, ablation and kind: dense and sparse counts at the threshold and
        their ratio (NaN where either never reached it)."""
        wide = self._at_threshold().pivot(index=_DRAW_KEYS, columns="model", values="needed")
        ratio = (wide["dense"] / wide["sparse"]).replace([np.inf, -np.inf], np.nan)
        table = wide[["dense", "sparse"]].assign(ratio=ratio).reset_index()
        table.columns.name = None
        return table.assign(task=self.task, model=self.model)[["task", "model", *_DRAW_KEYS, "dense", "sparse",
                                                               "ratio"]]

    @property
    def ratios(self) -> list[SizeRatio]:
        """One :class:`SizeRatio` per (ablation, kind) reached in at least one draw."""
        draws = self.draws().dropna(subset=["ratio"])
        out = []
        for (ablation, kind), group in draws.groupby(["ablation", "kind"], sort=True):
            per_seed = group.groupby("train_seed")["ratio"]
            width = float((per_seed.max() - per_seed.min()).mean())
            out.append(SizeRatio(self.task, self.model, ablation, kind, spread(group["ratio"], "draws"),
                                 spread(per_seed.mean(), "training seeds"), len(self.train_seeds),
                                 len(self.prompt_seeds), width))
        return out

    def sizes_table(self) -> pd.DataFrame:
        """Edges / heads needed at the threshold: mean, min and max over training seeds x prompt sets, per
        ablation, kind and model."""
        return self._at_threshold().groupby(["ablation", "kind", "model"])["needed"].agg(["mean", "min", "max"])

    def effect_table(self) -> pd.DataFrame:
        """The effect being explained, m(model) - m(empty), mean over training seeds x prompt sets."""
        at = self._at_threshold()
        effect = (at["m_model"] - at["m_empty"]).groupby([at["ablation"], at["kind"], at["model"]]).mean()
        return effect.rename("effect").to_frame()

    def curves_of(self, train_seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(curves, needed) of one training seed, for the curves figure."""
        return (self.curves[self.curves["train_seed"] == train_seed],
                self.needed[self.needed["train_seed"] == train_seed])

    def to_metrics(self) -> dict:
        sizes, effect = self.sizes_table()["mean"], self.effect_table()["effect"]

        def nested(series):
            out = {}
            for (ablation, kind, model), value in series.items():
                out.setdefault(ablation, {}).setdefault(kind, {})[model] = float(value)
            return out

        kept = spread(self.sparse_kept_fraction.values(), "training seeds")
        out = {"status": "measured", "model": self.model, "train_seeds": self.train_seeds,
               "prompt_seeds": self.prompt_seeds, "sparse_kept_fraction": kept.to_dict(),
               "needed_at_threshold": nested(sizes), "effect": nested(effect)}
        if len(self.performance):
            out["performance"] = {label: {k: v.to_dict() for k, v in values.items()}
                                  for label, values in self.performance_spreads().items()}
            out["performance"].update(chance=CHANCE[self.task], bar=PASS_FACTOR * CHANCE[self.task],
                                      counts=self.counts)
        return out

    def performance_spreads(self) -> dict[str, dict[str, Spread]]:
        """Per model: accuracy and metric on the clean prompts over training seeds x prompt sets."""
        return {label: {"accuracy": spread(group["accuracy"], "draws"), "metric": spread(group["metric"], "draws")}
                for label, group in self.performance.groupby("model")}

    @property
    def counts(self) -> bool:
        """A task scored against distractors counts when the dense model's accuracy clears the bar; others do."""
        if self.task not in CHANCE:
            return True
        return self.performance_spreads()["dense"]["accuracy"].mean >= PASS_FACTOR * CHANCE[self.task]

    @property
    def sentence(self) -> str:
        ratios = self.ratios
        if not ratios:
            return (f"{self.task} on {self.model}: neither model reached {self.threshold:.0%} of the effect in any "
                    f"draw, so there is no ratio.")
        parts = [f"{r.text} fewer {r.kind} ({r.ablation} ablation)" for r in ratios]
        sentence = (f"{self.task} on {self.model}: to explain {self.threshold:.0%} of the effect the sparse model "
                    f"needs {', '.join(parts)} than the dense one.")
        if len(self.train_seeds) > 1 and len(self.prompt_seeds) > 1:
            sentence += (" Per training seed (mean over its prompt sets): "
                         + "; ".join(f"{r.kind}, {r.ablation}: {r.seeds_text}" for r in ratios) + ".")
        effect = self.effect_table()["effect"]
        dense = effect.xs("dense", level="model").abs().min()
        sparse = effect.xs("sparse", level="model").abs().max()
        if sparse < 1e-2 * dense:
            sentence += (f" But the sparse model has almost no effect to explain (|m(model) − m(empty)| ≤ "
                         f"{sparse:.3f} against at least {dense:.3f} dense), so these ratios say little about "
                         f"circuit size.")
        return sentence


# Tasks scored by accuracy against distractors: chance accuracy, and the bar a dense model must clear for its circuit
# to be worth measuring (twice chance: two of three Docstring prompts right where guessing gets one).
CHANCE = {"docstring": 1 / 3}
PASS_FACTOR = 2.0


def task_performance(setup: CircuitSetup, prompt_seeds: Sequence[int]) -> pd.DataFrame:
    """Accuracy (the answer above every distractor) and mean metric of each model on every clean prompt set."""
    import torch

    from ..circuits import beats_distractors

    rows = []
    for prompt_seed in prompt_seeds:
        task = setup.make_task(int(prompt_seed))
        for label, model in setup.models.items():
            device = next(model.parameters()).device
            with torch.no_grad():
                mask = None if task.attention_mask is None else task.attention_mask.to(device)
                logits = model(input_ids=task.clean_ids.to(device), attention_mask=mask).logits.float().cpu()
            rows.append({"train_seed": int(setup.train_seed), "prompt_seed": int(prompt_seed), "model": label,
                         "accuracy": float(beats_distractors(logits, task.targets).float().mean()),
                         "metric": float(task.metric(logits).mean()), "prompts": len(task)})
    return pd.DataFrame(rows)


def performance_sentence(sizes: "TaskSizes") -> str:
    """Whether the dense model does the task well enough to count (accuracy at least PASS_FACTOR x chance)."""
    chance = CHANCE[sizes.task]
    bar = PASS_FACTOR * chance
    text = "; ".join(f"{label} {values['accuracy'].text(PERCENT)} right, logit difference "
                     f"{values['metric'].text(SIGNIFICANT)}" for label, values in sizes.performance_spreads().items())
    verdict = "clears" if sizes.counts else "does not clear"
    counts = "so its circuit sizes below count" if sizes.counts else (
        "so the task does not count: its circuit sizes below describe a model that cannot do it")
    return (f"{sizes.task} on {sizes.model}, clean prompts: {text} (chance {chance:.0%}). The dense model "
            f"{verdict} the bar of {bar:.0%} (twice chance), {counts}.")


def measure_sizes(setup: CircuitSetup, prompt_seeds: Sequence[int], *, method: str, ablations: Sequence[str],
                  points: int, threshold: float = THRESHOLD) -> TaskSizes:
    """The sizes of one training seed's models (``setup``) on every prompt set of ``prompt_seeds``."""
    from ..circuits import size_study

    needed, curves = size_study(setup.models, setup.make_task, prompt_seeds, method=method, ablations=ablations,
                                points=points)
    keys = {"task": setup.task, "train_seed": int(setup.train_seed)}
    performance = task_performance(setup, prompt_seeds) if setup.task in CHANCE else pd.DataFrame()
    return TaskSizes(setup.task, setup.model, method, threshold,
                     needed.rename(columns={"seed": "prompt_seed"}).assign(**keys),
                     curves.rename(columns={"seed": "prompt_seed"}).assign(**keys),
                     {int(setup.train_seed): float(setup.sparse_kept_fraction)}, performance)


def combine_sizes(parts: Sequence[TaskSizes]) -> TaskSizes:
    """One task's sizes over several training seeds, from one :class:`TaskSizes` per seed."""
    if not parts:
        raise ValueError("parts: need the sizes of at least one training seed")
    first = parts[0]
    if any((p.task, p.model, p.method, p.threshold) != (first.task, first.model, first.method, first.threshold)
           for p in parts):
        raise ValueError("parts: all must be the same task, model, method and threshold")
    seeds = [s for p in parts for s in p.sparse_kept_fraction]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"parts: a training seed appears twice ({seeds})")
    return TaskSizes(first.task, first.model, first.method, first.threshold,
                     pd.concat([p.needed for p in parts], ignore_index=True),
                     pd.concat([p.curves for p in parts], ignore_index=True),
                     {s: f for p in parts for s, f in p.sparse_kept_fraction.items()},
                     pd.concat([p.performance for p in parts], ignore_index=True))


def measure_task(task: str, model: str, train_seeds: Sequence[int], prompt_seeds: Sequence[int], *, n_prompts: int,
                 method: str, ablations: Sequence[str], points: int, threshold: float = THRESHOLD,
                 **setup_options) -> TaskSizes | Unavailable:
    """One task for every training seed (its own dense and sparse models, loaded one seed at a time) on every
    prompt set; ``setup_options`` go to :func:`circuit_setup`. Unavailable when a seed's models are."""
    parts = []
    for seed in train_seeds:
        setup = circuit_setup(task, model, n_prompts=n_prompts, seed=int(seed), **setup_options)
        if isinstance(setup, Unavailable):
            return setup
        parts.append(measure_sizes(setup, prompt_seeds, method=method, ablations=ablations, points=points,
                                   threshold=threshold))
    return combine_sizes(parts)


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
        """One row per (task, ablation, kind): the ratio's mean, min and max over all draws, their number, and the
        min and max of the per-training-seed means."""
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
        table = spread_table(draws.dropna(subset=["ratio"]), ["task", "ablation", "kind", "train_seed"], ["ratio"])
        return table.sort_index()

    def _pending(self) -> list[str]:
        """The unavailable tasks, grouped by model and reason: ``"ioi, greater-than on gpt2: pending (reason)"``."""
        groups = {}
        for task, result in self.tasks.items():
            if isinstance(result, Unavailable):
                groups.setdefault((result.model, result.reason), []).append(task)
        return [f"{', '.join(tasks)} on {model}: pending ({reason})" for (model, reason), tasks in groups.items()]

    def _headline(self, kind: str) -> list[SizeRatio]:
        """The headline ratio of ``kind`` of each measured task: the first ablation's."""
        return [r for t in self.measured for r in t.ratios if r.kind == kind and r.ablation == self.ablations[0]]

    def claim_line(self, kind: str) -> str:
        parts = []
        counts = {t.task: t.counts for t in self.measured}
        for ratio in self._headline(kind):
            both = ratio.train_seeds > 1 and ratio.prompt_sets > 1
            seeds = f"; per-training-seed means {ratio.seeds_text}" if both else ""
            caveat = "" if counts[ratio.task] else " (does not count: the dense model fails the task)"
            parts.append(f"{ratio.task} on {ratio.model}: {ratio.text} fewer {kind}{seeds}{caveat}")
        return (f"dense / sparse at {self.threshold:.0%} explained effect, {self.method}, {self.ablations[0]} "
                f"ablation: " + "; ".join(parts + self._pending()))

    def claim_values(self, kind: str) -> dict:
        """The numbers behind :meth:`claim_line`: per task, the spread over draws and over training seeds."""
        counts = {t.task: t.counts for t in self.measured}
        return {r.task: {"over_draws": r.over_draws.to_dict(), "over_training_seeds": r.over_seeds.to_dict(),
                         "train_seeds": r.train_seeds, "prompt_sets": r.prompt_sets, "counts": counts[r.task]}
                for r in self._headline(kind)}

    @property
    def tasks_sentence(self) -> str:
        """A markdown list: each measured task's ratios, then the tasks not measured here."""
        pending = self._pending()
        sentences = [t.sentence for t in self.measured] + ([f"Not measured: {'; '.join(pending)}."] if pending else [])
        return "\n".join(f"- {sentence}" for sentence in sentences)

    @property
    def variation_sentence(self) -> str:
        """Which source of variation dominates each headline ratio (training seeds or prompt sets)."""
        parts = [f"{r.task}, {r.kind} ({r.ablation}): {r.variation}" for kind in ("edges", "heads")
                 for r in self._headline(kind) if r.variation]
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
                         f"run from {ours.min():.1f}× to {ours.max():.1f}×, {inside} of {len(ours)} inside the "
                         f"paper's {reported.low:g}–{reported.high:g}×")
        sentence = "; ".join(parts)
        return sentence[0].upper() + sentence[1:] + "."

    def to_metrics(self) -> dict:
        tasks = {task: ({"status": "pending", "model": r.model, "reason": r.reason} if isinstance(r, Unavailable)
                        else r.to_metrics()) for task, r in self.tasks.items()}
        return {"tasks": tasks, "ratios_at_threshold": self.ratio_table().to_dict(orient="records"),
                "ratios_by_draw": self.draws_table().to_dict(orient="records"),
                "method": self.method, "threshold": self.threshold}


def exact_affordable(tasks: Sequence[str], lm: str, gpt2_model: str) -> list[str]:
    """The tasks whose models are trained here (small enough for exact patching on a CPU)."""
    return [t for t in tasks if zoo.entry_for(task_model(t, lm, gpt2_model)).source == "toy"]


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
        parts = [f"{model}: " + ", ".join(f"{method} {rho:.2f}" for method, rho in methods.items())
                 for model, methods in self.spearman.items()]
        return (f"{self.task}: rank correlation with exact patching on {self.prompts} prompts, models of training "
                f"seed {self.train_seed} only: {'; '.join(parts)}.")


def method_agreement(setup: CircuitSetup, seed: int, methods: Sequence[str] = ("eap", "eap-ig")) -> MethodAgreement:
    """Agreement on the prompt set ``seed`` for ``setup``'s models (one training seed)."""
    from ..circuits import ComponentGraph, attribute, spearman

    task = setup.make_task(seed)
    result = {}
    for label, model in setup.models.items():
        graph = ComponentGraph(model)
        exact = attribute(graph, task, "exact").scores.abs()
        result[label] = {m: spearman(attribute(graph, task, m).scores.abs(), exact) for m in methods}
    return MethodAgreement(len(task), result, int(setup.train_seed), setup.task)
