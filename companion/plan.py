"""What a profile will train, printed before any notebook starts: every planned training run with its steps, an
estimate of its time and its memory per process, and a stop in one line when a hub model it needs is not on this
machine while the hub is unreachable.

Time per step comes from measurements, never from guesses: on CUDA, the tokens per second ``make gpu-check``
measured for the nearest architecture (``results/benchmarks/gpu_check``); on a CPU, the published runs of the
same model (``models/<profile>/``). Without a measurement the estimate says "unknown". Memory is
:func:`spartan_core.training.memory.estimate_from_config` of the model's config at the run's batch and length.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from .results import read_metrics, results_root

__all__ = ["PlannedRun", "plan_notebook", "plan_profile", "plan_lines"]


@dataclass(frozen=True)
class PlannedRun:
    """``runs`` trainings of ``model`` (one per seed or setting) of ``steps`` steps each at ``batch_size``."""

    notebook: str
    model: str
    what: str
    runs: int
    steps: int
    batch_size: int
    seconds_per_step: float | None = None
    memory_gib: float | None = None
    reused_from: str | None = None  # an earlier notebook trains the same runs (same model, steps and batch)

    @property
    def seconds(self) -> float | None:
        if self.reused_from:
            return 0.0
        return None if self.seconds_per_step is None else self.runs * self.steps * self.seconds_per_step

    @property
    def gate_key(self) -> tuple | None:
        """What makes two learned-gate runs one cached model in this plan's terms (fixed-policy and penalty runs
        are never shared)."""
        if self.what not in ("post-training", "GECO post-training", "learned gate", "pretraining"):
            return None
        return (self.model, self.what == "pretraining", self.steps, self.batch_size)

    def line(self) -> str:
        if self.reused_from:
            time = f"reused from {self.reused_from[:2]}"
        else:
            time = "unknown" if self.seconds is None else f"{self.seconds / 60:.1f} min"
        memory = ("unknown" if self.memory_gib is None else f"{self.memory_gib:.1f} GiB" if self.memory_gib >= 1
                  else f"{self.memory_gib * 1024:.0f} MiB")
        return (f"  {self.notebook:<24} {self.model:<24} {self.what:<28} {self.runs:>3} x {self.steps:>6} steps  "
                f"time {time:>14}  memory/process {memory}")


def _steps(name: str, steps: int | None) -> int:
    """A notebook's ``*_steps: null`` means the model's default recipe (floor phase included)."""
    from spartan_core import zoo

    if steps is not None:
        return steps
    recipe = zoo.default_sparse_recipe(name)
    return recipe.steps + max(recipe.floor_steps, 0)


def _batch(name: str) -> int:
    from spartan_core import zoo

    return zoo.default_sparse_recipe(name).batch_size


def _post(name: str, what: str, runs: int, steps: int | None, batch: int | None = None) -> PlannedRun:
    """A post-training line; :func:`plan_notebook` names its notebook."""
    return PlannedRun("", name, what, runs, _steps(name, steps), batch or _batch(name))


def _ch02(p):
    n = len(p["train_seeds"])
    return [_post(p["model"], "GECO post-training", n, p["steps"], p["batch_size"]),
            _post(p["model"], "compute-matched controls", n, p["steps"], p["batch_size"]),
            _post(p["model"], "fixed-penalty post-training", n * len(p["fixed_betas"]), p["steps"],
                  p["batch_size"])]


def _ch03(p):
    runs = [_post(m, what, len(p["train_seeds"]), p["sparse_steps"]) for m in p["post_train"]
            for what in ("post-training", "compute-matched controls")]
    if p.get("thread_check"):
        runs.append(_post("addition-4l", "1-thread retrain check", 1, p["sparse_steps"]))
    return runs


def _ch04(p):
    return [_post(p["model"], "post-training", len(p["train_seeds"]), p["sparse_steps"])]


def _ch05(p):
    return [_post("addition-4l", "post-training", len(p["train_seeds"]), p["sparse_steps"])]


def _ch06(p):
    runs = []
    if "addition" in p["tasks"]:
        runs.append(_post("addition-4l", "post-training", len(p["train_seeds"]), p["sparse_steps"]))
    if any(task != "addition" for task in p["tasks"]):
        runs.append(_post(p["lm"], "post-training", len(p["train_seeds"]), p["lm_sparse_steps"]))
    return runs


def _ch07(p):
    runs = []
    for model in p["models"]:
        toy = model == "addition-4l"
        budgets = p["addition_budgets"] if toy else p["lm_budgets"]
        runs.append(_post(model, "learned gate", 1, p["learned_steps"]))
        runs.append(_post(model, "fixed-policy fine-tunes", len(p["policies"]) * len(budgets),
                          p["addition_steps"] if toy else p["lm_steps"]))
    settings = len(p["controllers"]) + len(p["fixed_betas"])
    runs.append(_post(p["controller_model"], "controller runs", settings * len(p["controller_seeds"]),
                      p["controller_steps"], p["controller_batch_size"]))
    return runs


def _ch08(p):
    return [_post("addition-4l", "post-training", 1, p["sparse_steps"])]


PLANNERS: dict[str, Callable[[Mapping[str, Any]], list[PlannedRun]]] = {
    "02_sparsity_loss_curves": _ch02, "03_edges_and_loss": _ch03, "04_attention_patterns": _ch04,
    "05_addition": _ch05, "06_circuits": _ch06, "07_baselines": _ch07, "08_explorer": _ch08,
}


def plan_notebook(notebook: str, parameters: Mapping[str, Any]) -> list[PlannedRun]:
    """The training runs ``notebook`` asks for under ``parameters`` (01 trains nothing), each toy's pretraining
    (one per training seed) first."""
    from spartan_core import zoo

    planner = PLANNERS.get(notebook)
    runs = [] if planner is None else [replace(r, notebook=notebook) for r in planner(parameters) if r.runs > 0]
    seeds = len(parameters.get("train_seeds") or [parameters.get("seed", 0)])
    pretraining = []
    for model in dict.fromkeys(r.model for r in runs):
        entry = zoo.entry_for(model)
        if entry.source == "toy":
            steps = parameters.get("dense_steps") or entry.pretrain["steps"]
            pretraining.append(PlannedRun(notebook, model, "pretraining", seeds, steps, entry.pretrain["batch_size"]))
    return [*pretraining, *runs]


def _memory_gib(run: PlannedRun) -> float:
    """Raises :class:`spartan_core.zoo.HubUnavailableError` for a hub model whose config is not on this machine."""
    from spartan_core import zoo
    from spartan_core.training.memory import GIB, estimate_from_config

    recipe = zoo.default_sparse_recipe(run.model)
    config = zoo.model_config(run.model)
    length = min(recipe.block_size, getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings",
                                                                                    recipe.block_size))
    estimate = estimate_from_config(config, lora_rank=recipe.lora_rank, lora_mlp=recipe.lora_mlp, seq_len=length,
                                    micro_batch=run.batch_size)
    return estimate.total / GIB


def _cpu_step_times(profile: str, models_dir: Path | None) -> dict[tuple[str, bool], float]:
    """Median seconds per step of the published runs of each (model, pretraining?) (CPU estimates)."""
    from .published import MANIFEST, published_dir

    path = published_dir(profile, models_dir) / MANIFEST
    if not path.is_file():
        return {}
    from spartan_core import zoo

    per_model: dict[tuple[str, bool], list[float]] = {}
    for model in json.loads(path.read_text())["models"]:
        call = model["call"]
        if not model.get("train_wall_time_s"):
            continue
        if model["kind"] == "sparse":
            steps = call["recipe"]["steps"] + max(call["recipe"].get("floor_steps") or 0, 0)
        else:
            steps = call["overrides"].get("steps") or zoo.entry_for(model["model"]).pretrain["steps"]
        per_model.setdefault((model["model"], model["kind"] == "dense"), []).append(
            model["train_wall_time_s"] / max(steps, 1))
    return {key: statistics.median(times) for key, times in per_model.items()}


def _gpu_step_time(run: PlannedRun, measured: dict, length: int) -> float | None:
    """Seconds per step from the sparse tokens/s ``make gpu-check`` measured on the architecture nearest in size."""
    from spartan_core import zoo

    if not measured:
        return None
    from spartan_core.training.memory import model_from_config

    size = sum(p.numel() for p in model_from_config(zoo.model_config(run.model)).parameters())
    nearest = min(measured.values(), key=lambda m: abs(m["sparse"]["parameters"] - size))
    rate = nearest["sparse"]["tokens_per_s"] * nearest["sparse"]["parameters"] / size
    return run.batch_size * length / rate


def plan_profile(profile: str, parameters: Mapping[str, Mapping[str, Any]], *, cuda: bool,
                 models_dir: Path | None = None, root: Path | None = None) -> list[PlannedRun]:
    """Every notebook's planned runs with time and memory estimates; raises HubUnavailableError (one line) when
    a hub model of the plan is missing while offline."""
    from spartan_core import zoo

    measured = (read_metrics(Path(root or results_root()) / "benchmarks" / "gpu_check").get("metrics", {})
                .get("steps") or {}) if cuda else {}
    cpu_times = {} if cuda else _cpu_step_times(profile, models_dir)
    out, first = [], {}
    for notebook, params in parameters.items():
        for run in plan_notebook(notebook, params):
            memory = _memory_gib(run)
            length = zoo.default_sparse_recipe(run.model).block_size
            per_step = (_gpu_step_time(run, measured, length) if cuda
                        else cpu_times.get((run.model, run.what == "pretraining")))
            earlier = first.get(run.gate_key)
            reused = earlier is not None and earlier.runs >= run.runs
            out.append(replace(run, seconds_per_step=per_step, memory_gib=memory,
                               reused_from=earlier.notebook if reused else None))
            if run.gate_key is not None and not reused:
                first[run.gate_key] = out[-1]
    return out


def plan_lines(profile: str, runs: list[PlannedRun], published: int) -> list[str]:
    own = [r for r in runs if not r.reused_from]
    known = [r.seconds for r in own if r.seconds is not None]
    if not known:
        total = "training time unknown (no measured step times for this machine)"
    elif len(known) < len(own):
        total = f"about {sum(known) / 60:.0f} min of training for the runs with measured step times, the rest unknown"
    else:
        total = f"about {sum(known) / 60:.0f} min of training"
    head = (f"plan ({profile}): {sum(r.runs for r in own)} training runs, {total}, if nothing is cached; "
            f"{published} published models are imported and not trained again")
    return [head, *(r.line() for r in runs)]
