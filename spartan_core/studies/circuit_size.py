"""Chapter 6's question: once attention is sparse, is the circuit that does a task smaller? Edges and heads needed
for 90 % of the effect, dense against sparse, beside the paper's own ranges, measured for several training seeds
(each its own dense toy and sparse copy) x prompt sets, one *draw* each: the mean with its min-max over the draws,
beside the spread of the per-training-seed means. Across tasks, the claims and the check of the attribution methods
are in :mod:`.circuit_comparison`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pandas as pd

from .. import zoo
from ..formatting import DECIMAL1, DECIMAL3, PERCENT, PERCENT_WHOLE, SIGNIFICANT, TIMES, counted
from .common import Unavailable, load_pair
from .seeds import Seeds, Spread, spread

CIRCUIT_TASKS = ("addition", "induction", "docstring", "ioi", "greater-than")
CODE_MODEL = "python-lm"  # the Docstring task needs a model of Python code
THRESHOLD = 0.9
DRAWS = "seeds x prompt sets"  # what a spread over draws is over
_DRAW_KEYS = ["train_seed", "prompt_seed", "ablation", "kind"]


@dataclass(frozen=True)
class PaperRange:
    """A range the paper reports, shown labelled as the paper's: dense / sparse circuit size at 90 % effect."""

    kind: str
    low: float
    high: float


# The paper's ranges, the one place they are typed: Greater-Than and IOI on GPT-2, Docstring and a long IOI on OLMo-7B.
PAPER_RATIOS = (PaperRange("heads", 1.4, 4.5), PaperRange("edges", 5.4, 97.0))
PAPER_TASKS = "Greater-Than and IOI on GPT-2, Docstring and a long IOI on OLMo-7B"


def paper_table() -> pd.DataFrame:
    return pd.DataFrame([asdict(r) for r in PAPER_RATIOS]).set_index("kind").assign(tasks=PAPER_TASKS)


def task_model(task: str, lm: str, gpt2_model: str) -> str:
    """The model a task runs on: the addition toy, the language model, the code model (Docstring) or GPT-2."""
    if task not in CIRCUIT_TASKS:
        raise ValueError(f"tasks: choose from {CIRCUIT_TASKS}, got {task!r}")
    return {"addition": "addition-4l", "induction": lm, "docstring": CODE_MODEL}.get(task, gpt2_model)


def exact_affordable(tasks: Sequence[str], lm: str, gpt2_model: str) -> list[str]:
    """The tasks whose models are trained here (small enough for exact patching on a CPU)."""
    return [t for t in tasks if zoo.entry_for(task_model(t, lm, gpt2_model)).source == "toy"]


@dataclass(frozen=True)
class CircuitSettings:
    """How the chapter measures (the first ablation is the headline's); a text LM trains with the ``lm_`` steps,
    and the default steps keep the registry's recipe."""

    n_prompts: int = 16
    method: str = "eap"
    ablations: Sequence[str] = ("resample",)
    points: int = 8
    induction_half: int = 8
    threshold: float = THRESHOLD
    dense_steps: int | None = None
    sparse_steps: int | None = None
    lm_sparse_steps: int | None = None
    lm_floor_steps: int | None = None

    @classmethod
    def from_parameters(cls, parameters: Mapping) -> CircuitSettings:
        """The settings among a notebook's parameters (the others are ignored)."""
        return cls(**{f.name: parameters[f.name] for f in fields(cls) if f.name in parameters})


@dataclass(frozen=True)
class CircuitSetup:
    """One task on the dense and sparse models of one training seed; ``make_task(prompt_seed)`` gives a prompt set."""

    task: str
    model: str
    models: dict
    make_task: Callable
    sparse_kept_fraction: float
    train_seed: int = 0


def _seeded(make: Callable, *args, **options) -> Callable:
    return lambda seed: make(*args, seed=seed, **options)


def circuit_setup(task: str, model: str, settings: CircuitSettings, seed: int = 0) -> CircuitSetup | Unavailable:
    """Dense and sparse copies of ``model`` for training seed ``seed`` and the prompt-set generator."""
    from .. import circuits
    from ..data.code import heldout_names
    from ..data.induction import random_token_range

    s = settings  # a text LM takes the lm_ recipe
    text = zoo.entry_for(model).language_model
    steps = dict(sparse_steps=s.lm_sparse_steps, floor_steps=s.lm_floor_steps) if text else dict(
        sparse_steps=s.sparse_steps)
    pair = load_pair(model, seed=seed, dense_steps=s.dense_steps, **steps)
    if isinstance(pair, Unavailable):
        return pair
    dense, tokenizer = pair.dense.model.eval(), pair.dense.tokenizer
    if task == "induction":
        low, bos = random_token_range(tokenizer, dense.config.vocab_size)
        make_task = _seeded(circuits.induction_task, dense.config.vocab_size, s.n_prompts, half=s.induction_half,
                            low=low, prefix=() if bos is None else (bos,))
    elif task == "docstring":  # names from the code model's held-out modules
        names = heldout_names(zoo.entry_for(model).data["heldout_percent"])
        make_task = _seeded(circuits.docstring_task, tokenizer, names["arguments"], names["functions"], s.n_prompts)
    else:
        make_task = _seeded({"addition": circuits.addition_task, "ioi": circuits.ioi_task,
                             "greater-than": circuits.greater_than_task}[task], s.n_prompts)
    return CircuitSetup(task, model, {"dense": dense, "sparse": pair.sparse.model.eval()}, make_task,
                        pair.after.kept_fraction, seed)


@dataclass(frozen=True)
class SizeRatio:
    """Dense / sparse circuit size at the threshold of one (task, ablation, kind) over the draws and as the
    per-training-seed means; ``within``: the mean over training seeds of the min-max width over prompt sets."""

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
    def text(self) -> str:
        """``"4.0× (2.9×–5.8× over 3 training seeds x 3 prompt sets)"``; draws that never reached the threshold
        are counted out (``"2.0× (1 of 2 draws of 1 training seed x 2 prompt sets)"``)."""
        values, draws = self.over_draws, self.train_seeds * self.prompt_sets
        grid = f"{counted(self.train_seeds, 'training seed')} x {counted(self.prompt_sets, 'prompt set')}"
        grid = grid if values.n == draws else f"{values.n} of {draws} draws of {grid}"
        return f"{TIMES(values.mean)} ({grid})" if values.n == 1 else \
            f"{TIMES(values.mean)} ({TIMES(values.low)}–{TIMES(values.high)} over {grid})"

    @property
    def variation(self) -> str:
        """Which moves the ratio more, the training seed or the prompt set; empty when only one of them varies."""
        if self.train_seeds < 2 or self.prompt_sets < 2:
            return ""
        between = self.over_seeds.high - self.over_seeds.low
        larger = "the training seed moves" if between > self.within else "the prompt set moves"
        return (f"the per-training-seed means run {TIMES(self.over_seeds.low)}–{TIMES(self.over_seeds.high)} (a "
                f"width of {DECIMAL1(between)}) against a mean width of {DECIMAL1(self.within)} over the prompt "
                f"sets of one training seed, so {larger} it more")

    def row(self) -> dict:
        return {"task": self.task, "model": self.model, "ablation": self.ablation, "kind": self.kind,
                "ratio_mean": self.over_draws.mean, "ratio_min": self.over_draws.low,
                "ratio_max": self.over_draws.high, "draws": self.over_draws.n, "train_seeds": self.train_seeds,
                "prompt_sets": self.prompt_sets, "seed_mean_min": self.over_seeds.low,
                "seed_mean_max": self.over_seeds.high, "within_seed_width": self.within}


RATIO_COLUMNS = list(SizeRatio("", "", "", "", spread([1.0]), spread([1.0]), 1, 1, 0.0).row())


@dataclass(frozen=True)
class SeedSizes:
    """One training seed's models on every prompt set: ``circuits.size_study``'s frames (with ``train_seed`` and
    ``prompt_seed``), the clean-prompt scores of a task scored against distractors, the sparse kept fraction."""

    seed: int
    needed: pd.DataFrame
    curves: pd.DataFrame
    sparse_kept_fraction: float
    performance: pd.DataFrame = field(default_factory=pd.DataFrame)

    def row(self) -> dict:
        return {"sparse_kept_fraction": self.sparse_kept_fraction}


@dataclass(frozen=True)
class TaskSizes:
    """Circuit sizes of one task over its training seeds (``runs``) x prompt sets; ``needed``, ``curves`` and
    ``performance`` stack every seed's rows."""

    task: str
    model: str
    method: str
    threshold: float
    runs: Seeds[SeedSizes]

    def __post_init__(self):
        if len(set(self.runs.seeds)) != len(self.runs):
            raise ValueError(f"runs: a training seed appears twice ({self.runs.seeds})")

    def _stacked(self, name: str) -> pd.DataFrame:
        return pd.concat([getattr(run, name) for run in self.runs.runs], ignore_index=True)

    needed = property(lambda self: self._stacked("needed"))
    curves = property(lambda self: self._stacked("curves"))
    performance = property(lambda self: self._stacked("performance"))

    def _at_threshold(self) -> pd.DataFrame:
        return self.needed[np.isclose(self.needed["threshold"], self.threshold)]

    train_seeds = property(lambda self: sorted(self.needed["train_seed"].unique().tolist()))
    prompt_seeds = property(lambda self: sorted(self.needed["prompt_seed"].unique().tolist()))

    def draws(self) -> pd.DataFrame:
        """One row per draw, ablation and kind: dense and sparse counts at the threshold, their ratio (or NaN)."""
        wide = self._at_threshold().pivot(index=_DRAW_KEYS, columns="model", values="needed")
        ratio = (wide["dense"] / wide["sparse"]).replace([np.inf, -np.inf], np.nan)
        table = wide[["dense", "sparse"]].assign(ratio=ratio).reset_index()
        table.columns.name = None
        return table.assign(task=self.task, model=self.model)[["task", "model", *_DRAW_KEYS, "dense", "sparse",
                                                               "ratio"]]

    @property
    def ratios(self) -> list[SizeRatio]:
        """One :class:`SizeRatio` per (ablation, kind) reached in at least one draw."""
        out = []
        for (ablation, kind), group in self.draws().dropna(subset=["ratio"]).groupby(["ablation", "kind"]):
            per_seed = group.groupby("train_seed")["ratio"]
            out.append(SizeRatio(self.task, self.model, ablation, kind, spread(group["ratio"], DRAWS),
                                 spread(per_seed.mean(), "training seeds"), len(self.train_seeds),
                                 len(self.prompt_seeds), float((per_seed.max() - per_seed.min()).mean())))
        return out

    def sizes_table(self) -> pd.DataFrame:
        """Edges / heads needed at the threshold: mean, min and max over the draws, per ablation, kind, model."""
        return self._at_threshold().groupby(["ablation", "kind", "model"])["needed"].agg(["mean", "min", "max"])

    def effect_table(self) -> pd.DataFrame:
        """The effect being explained, m(model) - m(empty), mean over the draws."""
        at = self._at_threshold()
        effect = (at["m_model"] - at["m_empty"]).groupby([at["ablation"], at["kind"], at["model"]]).mean()
        return effect.rename("effect").to_frame()

    def to_metrics(self) -> dict:
        def nested(series):
            out = {}
            for (ablation, kind, model), value in series.items():
                out.setdefault(ablation, {}).setdefault(kind, {})[model] = float(value)
            return out

        out = {"status": "measured", "model": self.model, "train_seeds": self.train_seeds,
               "prompt_seeds": self.prompt_seeds,
               "sparse_kept_fraction": self.runs.spread("sparse_kept_fraction", "training seeds").to_dict(),
               "needed_at_threshold": nested(self.sizes_table()["mean"]),
               "effect": nested(self.effect_table()["effect"])}
        if len(self.performance):
            out["performance"] = {label: {k: v.to_dict() for k, v in values.items()}
                                  for label, values in self.performance_spreads().items()}
            out["performance"].update(chance=CHANCE[self.task], bar=PASS_FACTOR * CHANCE[self.task],
                                      counts=self.counts)
        return out

    def performance_spreads(self) -> dict[str, dict[str, Spread]]:
        """Per model: accuracy and metric on the clean prompts over training seeds x prompt sets."""
        return {label: {"accuracy": spread(group["accuracy"], DRAWS), "metric": spread(group["metric"], DRAWS)}
                for label, group in self.performance.groupby("model")}

    @property
    def counts(self) -> bool:
        """A task scored against distractors counts when the dense model's accuracy clears the bar; others do."""
        if self.task not in CHANCE:
            return True
        return self.performance_spreads()["dense"]["accuracy"].mean >= PASS_FACTOR * CHANCE[self.task]

    @property
    def sentence(self) -> str:
        ratios, share = self.ratios, PERCENT_WHOLE(self.threshold)
        if not ratios:
            return f"{self.task} on {self.model}: neither model reached {share} of the effect in any draw, so there " \
                   f"is no ratio."
        parts = [f"{r.text} fewer {r.kind} ({r.ablation} ablation)" for r in ratios]
        sentence = (f"{self.task} on {self.model}: to explain {share} of the effect the sparse model needs "
                    f"{', '.join(parts)} than the dense one.")
        if len(self.train_seeds) > 1 and len(self.prompt_seeds) > 1:
            sentence += (" Per training seed (mean over its prompt sets): "
                         + "; ".join(f"{r.kind}, {r.ablation}: {r.over_seeds.text(TIMES)}" for r in ratios) + ".")
        effect = self.effect_table()["effect"]
        dense, sparse = effect.xs("dense", level="model").abs().min(), effect.xs("sparse", level="model").abs().max()
        if sparse < 1e-2 * dense:
            sentence += (f" But the sparse model has almost no effect to explain (|m(model) − m(empty)| ≤ "
                         f"{DECIMAL3(sparse)} against at least {DECIMAL3(dense)} dense), so these ratios say little "
                         f"about circuit size.")
        return sentence


# Tasks scored by accuracy against distractors: chance accuracy, and the bar a dense model must clear for its circuit
# to be worth measuring (twice chance: two of three Docstring prompts right where guessing gets one).
CHANCE = {"docstring": 1 / 3}
PASS_FACTOR = 2.0


def task_performance(setup: CircuitSetup, prompt_seeds: Sequence[int]) -> pd.DataFrame:
    """Accuracy (the answer above every distractor) and mean metric of each model on every clean prompt set."""
    from ..circuits import clean_performance

    rows = []
    for prompt_seed in prompt_seeds:
        task = setup.make_task(int(prompt_seed))
        for label, model in setup.models.items():
            accuracy, metric = clean_performance(model, task)
            rows.append({"train_seed": int(setup.train_seed), "prompt_seed": int(prompt_seed), "model": label,
                         "accuracy": accuracy, "metric": metric, "prompts": len(task)})
    return pd.DataFrame(rows)


def performance_sentence(sizes: TaskSizes) -> str:
    """Whether the dense model does the task well enough to count (accuracy at least PASS_FACTOR x chance)."""
    chance = CHANCE[sizes.task]
    text = "; ".join(f"{label} {values['accuracy'].text(PERCENT)} right, logit difference "
                     f"{values['metric'].text(SIGNIFICANT)}" for label, values in sizes.performance_spreads().items())
    verdict = "clears" if sizes.counts else "does not clear"
    counts = "so its circuit sizes below count" if sizes.counts else (
        "so the task does not count: its circuit sizes below describe a model that cannot do it")
    return (f"{sizes.task} on {sizes.model}, clean prompts: {text} (chance {PERCENT_WHOLE(chance)}). The dense "
            f"model {verdict} the bar of {PERCENT_WHOLE(PASS_FACTOR * chance)} (twice chance), {counts}.")


def measure_sizes(setup: CircuitSetup, prompt_seeds: Sequence[int], settings: CircuitSettings) -> SeedSizes:
    """The sizes of one training seed's models (``setup``) on every prompt set of ``prompt_seeds``."""
    from ..circuits import SizeSettings, size_study

    needed, curves = size_study(setup.models, setup.make_task, prompt_seeds, method=settings.method,
                                ablations=settings.ablations, settings=SizeSettings(points=settings.points))
    seed = int(setup.train_seed)
    keys = {"task": setup.task, "train_seed": seed}
    return SeedSizes(seed, needed.rename(columns={"seed": "prompt_seed"}).assign(**keys),
                     curves.rename(columns={"seed": "prompt_seed"}).assign(**keys), float(setup.sparse_kept_fraction),
                     task_performance(setup, prompt_seeds) if setup.task in CHANCE else pd.DataFrame())


def measure_task(task: str, model: str, train_seeds: Sequence[int], prompt_seeds: Sequence[int],
                 settings: CircuitSettings) -> TaskSizes | Unavailable:
    """One task for every training seed (its own dense and sparse models, loaded one seed at a time) on every
    prompt set; Unavailable when a seed's models are."""
    runs = []
    for seed in train_seeds:
        setup = circuit_setup(task, model, settings, seed=int(seed))
        if isinstance(setup, Unavailable):
            return setup
        runs.append(measure_sizes(setup, prompt_seeds, settings))
    return TaskSizes(task, model, settings.method, settings.threshold, Seeds(tuple(runs)))
