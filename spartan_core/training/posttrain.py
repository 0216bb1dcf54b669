"""The paper's post-training recipe, in one place: the reference CE, the optional floor phase, the one tau rule,
GECO, the run, and metrics before and after. The model cache, the command line and the notebooks all call
:func:`post_train`; the CLI builds the same :class:`SparseRecipe` from its arguments."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import torch

from ..mechanism.policies import POLICIES, MaskPolicy, calibrate_threshold
from ..mechanism.sparsify import sparsify
from ..objective.base import Objective
from ..objective.geco import CONTROLLERS, GECO, PIGECO
from ..objective.sparsity import SparsityUnderCE
from ..objective.tau import TAU_REFERENCES, resolve_tau
from .._util import model_device
from .batches import iter_batches, validate_blocks
from .config import TrainConfig
from .distributed import fsdp_requested, processes
from .evaluate import HeldOut, evaluate, measure_heldout
from .checkpoint import RunFolder
from .loop import train
from .lora import merge_lora, with_lora
from .memory import MemoryEstimate, estimate_memory

__all__ = ["SparseRecipe", "PostTrainResult", "post_train", "planned_memory", "CHECKPOINT_EVERY", "CHECKPOINT_SECONDS",
           "DENSE_CONTROL"]

CHECKPOINT_EVERY = 500  # a run killed midway resumes from the last of these ...
CHECKPOINT_SECONDS = 120.0  # ... or of these, whichever came last: a kill loses at most two minutes
DENSE_CONTROL = "dense"  # the policy of the compute-matched control: every edge kept, no gate


@dataclass(frozen=True)
class SparseRecipe:
    """Sparse post-training settings. Optimiser: AdamW, ``lr``, ``schedule`` (``constant`` or ``cosine``).

    tau: an absolute CE target, or ``None`` to use ``tau_factor`` x the reference chosen by ``tau_reference``
    (``"dense"``: dense model's CE on training data; ``"floor"``: mean sampled-mask training CE over the last
    third of a first phase of ``floor_steps`` post-training steps with beta held at ``beta_min``), but at least
    ``tau_min`` (a relative tau under the sampled-mask CE floor would never let beta rise). GECO: ``eta`` (step on log beta per nat of slack),
    ``alpha`` (EMA), ``beta_init``/``beta_min``/``beta_max``. ``controller``: ``"geco"``, ``"fixed"`` (beta stays
    at ``beta_init``: a penalty method) or ``"pi"`` (GECO plus a proportional term ``kp``, by default
    eta / (1 - alpha): the slack weighs as much as one EMA time constant of its integral). ``gate_bias`` b opens
    gates at the start. ``policy``: ``"gate"`` (the learned gate) or a fixed mask rule of
    :mod:`~spartan_core.mechanism.policies` keeping ``keys_per_query`` keys, fine-tuned on plain CE for the same
    number of steps as the gate's floor and GECO phases together (a baseline; no tau, no multiplier), or
    ``"dense"``: the compute-matched control, the dense model fine-tuned on plain CE with the gate's data, steps
    (floor and GECO phases together), batch, schedule, seed and threads, but no gate; what separates the sparse
    model from it is sparsity, not the extra training.
    ``eval_every``: how often the deterministic-mask CE and edges are measured on training data, which is also
    where the best checkpoint meeting tau is chosen (never on the held-out split that results report);
    ``heldout_max_batches`` limits the reported held-out metrics to that many eval batches of blocks spread evenly
    over the split (None: all), so that a sweep of many short runs is not dominated by evaluation.
    ``lora_rank`` trains rank-r LoRA adapters on the attention projections (and the MLPs with ``lora_mlp``) in
    place of every weight, merged into the model at the end (:mod:`~spartan_core.training.lora`); None trains all.
    ``block_size`` applies to text data only. ``seed``: the training seed (batch order and sampled gates);
    ``threads``: torch CPU threads while training (None: as set), part of the recipe because the weights depend
    on it.
    """

    steps: int = 3000
    lr: float = 3e-4
    batch_size: int = 256
    schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    tau: float | None = None
    tau_factor: float = 1.0
    tau_reference: str = "dense"
    tau_min: float = 0.0
    floor_steps: int = 0
    eta: float = 1.0
    alpha: float = 0.99
    beta_init: float = math.exp(-8)
    beta_min: float = math.exp(-10)
    beta_max: float = math.exp(5)
    controller: str = "geco"
    kp: float | None = None
    gate_bias: float = 0.0
    policy: str = "gate"
    keys_per_query: float | None = None
    eval_every: int = 250
    eval_batch_size: int = 64
    eval_max_batches: int | None = None
    heldout_max_batches: int | None = None
    block_size: int = 128
    seed: int = 0
    threads: int | None = None
    lora_rank: int | None = None
    lora_mlp: bool = False

    def __post_init__(self):
        if self.tau is not None and not (self.tau > 0 and math.isfinite(self.tau)):
            raise ValueError(f"tau: must be a positive finite CE or None, got {self.tau!r}")
        if not (self.tau_factor > 0 and math.isfinite(self.tau_factor)):
            raise ValueError(f"tau_factor: must be positive, got {self.tau_factor!r}")
        if not (self.tau_min >= 0 and math.isfinite(self.tau_min)):
            raise ValueError(f"tau_min: must be a finite CE >= 0, got {self.tau_min!r}")
        if self.tau_reference not in TAU_REFERENCES:
            raise ValueError(f"tau_reference: must be one of {', '.join(TAU_REFERENCES)}, got {self.tau_reference!r}")
        if self.tau_reference == "floor" and self.tau is None and self.floor_steps < 1 and self.policy == "gate":
            raise ValueError("floor_steps: tau_reference='floor' needs floor_steps >= 1 to measure the floor")
        if self.floor_steps < 0:
            raise ValueError(f"floor_steps: must be >= 0, got {self.floor_steps!r}")
        if self.controller not in CONTROLLERS:
            raise ValueError(f"controller: must be one of {', '.join(CONTROLLERS)}, got {self.controller!r}")
        if self.kp is not None and self.controller != "pi":
            raise ValueError(f"kp: only the pi controller has a proportional gain (controller={self.controller!r})")
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"alpha: must be in [0, 1), got {self.alpha!r}")
        if self.policy != "gate" and (self.controller != "geco" or self.kp is not None):
            raise ValueError(f"controller: a fixed mask policy ({self.policy}) is fine-tuned on plain CE, so no "
                             f"controller or kp applies (got controller={self.controller!r}, kp={self.kp!r})")
        self.multiplier(1.0)  # refuses bad controller settings by name before any work
        if self.policy == DENSE_CONTROL:
            if self.keys_per_query is not None:
                raise ValueError("keys_per_query: the dense control keeps every key; set it only with a mask policy")
        elif self.policy != "gate":
            if self.policy not in POLICIES:
                raise ValueError(f"policy: must be 'gate', '{DENSE_CONTROL}' or one of {', '.join(POLICIES)}, got "
                                 f"{self.policy!r}")
            if self.keys_per_query is None:
                raise ValueError(f"keys_per_query: the {self.policy} policy needs a budget of kept keys per query")
            MaskPolicy(self.policy, self.keys_per_query)
        elif self.keys_per_query is not None:
            raise ValueError("keys_per_query: the learned gate chooses its own keys; set it only with a fixed policy")
        if self.heldout_max_batches is not None and (isinstance(self.heldout_max_batches, bool) or not isinstance(
                self.heldout_max_batches, int) or self.heldout_max_batches < 1):
            raise ValueError(f"heldout_max_batches: must be an integer >= 1 or None, got {self.heldout_max_batches!r}")
        if self.block_size < 2:
            raise ValueError(f"block_size: must be at least 2, got {self.block_size!r}")
        if self.lora_rank is not None and (isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int)
                                           or self.lora_rank < 1):
            raise ValueError(f"lora_rank: must be an integer >= 1 (None: train every weight), got {self.lora_rank!r}")
        if self.lora_mlp and self.lora_rank is None:
            raise ValueError("lora_mlp: adapters on the MLPs need a lora_rank")
        if self.lora_rank is not None and self.policy != "gate":
            raise ValueError(f"lora_rank: the {self.policy} baseline fine-tunes every weight; LoRA is for the gate")

    def identity(self) -> dict:
        """The settings that make a post-trained model what it is (its cache key). The LoRA settings join only
        when used, so models cached before they existed keep their keys."""
        settings = asdict(self)
        if self.lora_rank is None:
            del settings["lora_rank"], settings["lora_mlp"]
        return settings

    def multiplier(self, tau: float) -> GECO:
        """The controller of beta for target ``tau``, from ``controller`` and its settings."""
        settings = dict(alpha=self.alpha, eta=0.0 if self.controller == "fixed" else self.eta,
                        beta_init=self.beta_init, beta_min=self.beta_min, beta_max=self.beta_max)
        if self.controller == "pi":
            kp = self.eta / (1 - self.alpha) if self.kp is None else self.kp
            return PIGECO(tau, kp=kp, **settings)
        return GECO(tau, **settings)

    @classmethod
    def from_any(cls, recipe) -> "SparseRecipe":
        if recipe is None:
            return cls()
        if isinstance(recipe, cls):
            return recipe
        if not isinstance(recipe, dict):
            raise ValueError(f"recipe: expected a dict or SparseRecipe, got {type(recipe).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(recipe) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown sparse recipe setting (known: {', '.join(sorted(known))})")
        return cls(**recipe)

    def train_config(self, steps: int, **changes) -> TrainConfig:
        """The TrainConfig of one phase; ``changes`` are execution settings (progress, device, grad_accum, bf16,
        checkpoints ...)."""
        settings = dict(
            steps=steps, batch_size=self.batch_size, lr=self.lr, schedule=self.schedule,
            warmup_steps=self.warmup_steps, weight_decay=self.weight_decay, grad_clip=self.grad_clip,
            eval_every=self.eval_every, eval_batch_size=self.eval_batch_size,
            eval_max_batches=self.eval_max_batches, seed=self.seed, threads=self.threads,
            checkpoint_every=CHECKPOINT_EVERY, checkpoint_seconds=CHECKPOINT_SECONDS,
        )
        return TrainConfig(**{**settings, **changes})


@dataclass
class PostTrainResult:
    """One post-training run, as :func:`post_train` returns it and the zoo keeps it beside the loaded model.
    ``dense``, ``before`` and ``after`` are held-out numbers of the dense model, of the sparsified model before
    any training (the untrained gate, or the fixed policy as applied) and of the result; ``policy`` the fixed mask
    policy's settings (None: the learned gate; ``{"name": "dense"}``: the compute-matched control); ``history`` every training step (floor phase first, ``phase``
    says which), ``evals`` the selection runs. ``model`` is None when the run was read back from its record."""

    recipe: SparseRecipe
    tau: float | None  # None for a fixed policy, which has no constraint
    tau_reference: str
    dense_train_ce: float
    floor_ce: float | None
    best_step: int | None
    dense: HeldOut
    before: HeldOut
    after: HeldOut
    policy: dict | None = None
    history: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    wall_time_s: float = 0.0  # training time of its phases, each summed over a resumed run's segments
    machine: dict = field(default_factory=dict)
    model: torch.nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def is_control(self) -> bool:
        return self.policy is not None and self.policy["name"] == DENSE_CONTROL

    @property
    def metrics(self) -> dict:
        """The run record's ``metrics``: the three held-out records under the names the cache has always used."""
        before = "gated_before_training" if self.policy is None else "policy_before_training"
        record = {"dense": self.dense.to_record(), before: self.before.to_record(), "sparse": self.after.to_record()}
        return record if self.policy is None else {**record, "policy": self.policy}

    @classmethod
    def from_record(cls, info: dict, history: list[dict], evals: list[dict]) -> "PostTrainResult":
        """The run a cache entry's record describes (its ``info.json``, history and evals), without weights."""
        metrics = info["metrics"]
        before = metrics.get("gated_before_training", metrics.get("policy_before_training"))
        return cls(recipe=SparseRecipe.from_any(info["recipe"]), tau=info["tau"], tau_reference=info["tau_reference"],
                   dense_train_ce=info["dense_train_ce"], floor_ce=info["floor_ce"], best_step=info["best_step"],
                   dense=HeldOut.from_record(metrics["dense"]), before=HeldOut.from_record(before),
                   after=HeldOut.from_record(metrics["sparse"]), policy=metrics.get("policy"), history=history,
                   evals=evals, wall_time_s=info["train_wall_time_s"], machine=info.get("trained_on") or {})


def spread_rows(data: dict, rows: int) -> dict:
    """``rows`` blocks of a dataset evenly spaced over it (a data set stored in order, by file or by problem, is
    then still covered end to end); every per-block tensor is cut, anything else kept."""
    n = validate_blocks(data, "heldout")
    if rows >= n:
        return data
    index = torch.linspace(0, n - 1, rows).round().long()
    return {k: v[index] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == n else v for k, v in data.items()}


def planned_memory(model: torch.nn.Module, train_data: dict, recipe: SparseRecipe, execution: dict) -> MemoryEstimate:
    """The per-process memory estimate of post-training ``model`` (LoRA already applied) on ``train_data`` under
    ``recipe`` and the execution settings (``grad_accum``, ``fsdp``, ``activation_checkpointing``): the line
    :func:`post_train` prints before it starts. An automatic ``grad_accum`` is estimated at one micro-batch."""
    ranks = processes()
    accum = execution.get("grad_accum", 1)
    micro_batch = max(1, recipe.batch_size // (ranks.count * (1 if accum == "auto" else accum)))
    return estimate_memory(model, seq_len=int(train_data["input_ids"].shape[1]), micro_batch=micro_batch,
                           processes=ranks.count, sharded=fsdp_requested(execution.get("fsdp", False)),
                           activation_checkpointing=execution.get("activation_checkpointing", False))


@dataclass(frozen=True)
class _Phases:
    """How every training phase of one post-training run executes (floor, GECO, a fixed policy's or the control's
    fine-tuning): in its own folder inside ``folder`` so a killed run resumes, on ``train_data``, with the run's
    execution settings."""

    recipe: SparseRecipe
    train_data: dict
    folder: RunFolder | None
    desc: str
    execution: dict

    def run(self, model, name: str, steps: int, objective: Objective, desc: str, evaluate_on_train: bool = True,
            **config):
        return train(model, self.train_data, config=self.recipe.train_config(steps, **config, **self.execution),
                     eval_data=self.train_data if evaluate_on_train else None, objective=objective,
                     folder=self.folder.sub(name) if self.folder else None, desc=desc)


def post_train(model: torch.nn.Module, train_data: dict, heldout: dict, recipe: SparseRecipe, *,
               extra_metrics: Callable[[torch.nn.Module, dict], dict] | None = None,
               folder: RunFolder | None = None, desc: str = "sparse", **execution) -> PostTrainResult:
    """Sparsify ``model`` in place and post-train it under ``recipe``.

    The deterministic-mask CE on ``train_data`` is both tau's ``"dense"`` reference and where the kept checkpoint
    is chosen (never on ``heldout``, which only the reported metrics see). ``extra_metrics(model, heldout)``
    returns the task's fields of :class:`HeldOut` (the addition toy's exact match). ``folder`` holds the phases'
    run directories (``floor``, ``geco``) so a killed run resumes; ``execution`` passes TrainConfig settings that
    do not change what is learnt (progress, device, grad_accum, bf16, activation_checkpointing, checkpoint_every,
    checkpoint_seconds).
    """
    recipe = SparseRecipe.from_any(recipe)
    phases = _Phases(recipe, train_data, folder, desc, execution)
    batch = recipe.eval_batch_size
    if recipe.heldout_max_batches is not None:
        heldout = spread_rows(heldout, recipe.heldout_max_batches * batch)

    def measure(current) -> HeldOut:
        return measure_heldout(current, heldout, batch, extra_metrics)

    dense_train_ce = evaluate(model, train_data, batch, recipe.eval_max_batches).ce
    dense_metrics = measure(model)
    if recipe.policy == DENSE_CONTROL:
        return _dense_control(model, phases, measure, dense_train_ce, dense_metrics)
    if recipe.policy != "gate":
        return _fixed_policy(model, phases, measure, dense_train_ce, dense_metrics)
    sparsify(model, gate_bias=recipe.gate_bias)
    gated_metrics = measure(model)
    if recipe.lora_rank is not None:
        with torch.random.fork_rng(devices=[]):  # adapters drawn from the recipe's seed, not the caller's RNG
            torch.manual_seed(recipe.seed)
            model = with_lora(model, recipe.lora_rank, recipe.lora_mlp)
    if execution.get("progress", True) and processes().main:
        print(planned_memory(model, train_data, recipe, execution).sentence, file=sys.stderr, flush=True)
    history: list[dict] = []
    floor_ce, floor_time = None, 0.0
    if recipe.floor_steps:
        holder = GECO(tau=dense_train_ce, eta=0.0, alpha=recipe.alpha, beta_init=recipe.beta_min,
                      beta_min=recipe.beta_min, beta_max=recipe.beta_max)
        floor = phases.run(model, "floor", recipe.floor_steps, SparsityUnderCE(holder), f"floor {desc}",
                           evaluate_on_train=False, eval_every=0, keep_best=False)
        tail = [r["ce"] for r in floor.history[-max(1, recipe.floor_steps // 3):]]
        floor_ce, floor_time = sum(tail) / len(tail), floor.wall_time_s
        history += [{**r, "phase": "floor"} for r in floor.history]
    tau = resolve_tau(tau=recipe.tau, tau_factor=recipe.tau_factor, tau_reference=recipe.tau_reference,
                      tau_min=recipe.tau_min, dense_ce=dense_train_ce, floor_ce=floor_ce)
    geco = recipe.multiplier(tau)
    result = phases.run(model, "geco", recipe.steps, SparsityUnderCE(geco), desc)
    offset = recipe.floor_steps
    model = merge_lora(model)
    return PostTrainResult(
        recipe=recipe, tau=tau, tau_reference="absolute" if recipe.tau is not None else recipe.tau_reference,
        dense_train_ce=dense_train_ce, floor_ce=floor_ce,
        best_step=None if result.best_step is None else result.best_step + offset,
        dense=dense_metrics, before=gated_metrics, after=measure(model),
        history=history + [{**r, "step": r["step"] + offset, "phase": "geco"} for r in result.history],
        evals=[{**r, "step": r["step"] + offset} for r in result.evals],
        wall_time_s=floor_time + result.wall_time_s, machine=result.machine, model=model,
    )


def _fixed_policy(model, phases: _Phases, measure, dense_train_ce: float, dense_metrics: HeldOut) -> PostTrainResult:
    """A baseline: the fixed mask policy (a threshold calibrated on at most ``eval_max_batches`` batches of
    training data), measured as it is, then fine-tuned on plain CE."""
    recipe = phases.recipe
    policy = MaskPolicy(recipe.policy, recipe.keys_per_query, seed=recipe.seed)
    sparsify(model, gate_bias=recipe.gate_bias, policy=policy)
    if policy.name == "threshold":
        batches = iter_batches(phases.train_data, recipe.eval_batch_size, recipe.eval_max_batches, model_device(model))
        policy.threshold = calibrate_threshold(model, batches, recipe.keys_per_query)
    applied = measure(model)
    result = phases.run(model, "policy", recipe.floor_steps + recipe.steps, Objective(), f"{policy.name} {phases.desc}",
                        keep_best=False)
    return PostTrainResult(
        recipe=recipe, tau=None, tau_reference="none", dense_train_ce=dense_train_ce, floor_ce=None,
        best_step=None, dense=dense_metrics, before=applied, after=measure(model), policy=policy.to_dict(),
        history=[{**r, "phase": "policy"} for r in result.history], evals=result.evals,
        wall_time_s=result.wall_time_s, machine=result.machine, model=model)


def _dense_control(model, phases: _Phases, measure, dense_train_ce: float, dense_metrics: HeldOut) -> PostTrainResult:
    """The compute-matched control: the dense model fine-tuned on plain CE for the gate's floor and GECO steps
    together, never sparsified, ending at its last step (the gate's kept checkpoint is at most that late)."""
    recipe = phases.recipe
    result = phases.run(model, "control", recipe.floor_steps + recipe.steps, Objective(), f"dense {phases.desc}",
                        keep_best=False)
    return PostTrainResult(
        recipe=recipe, tau=None, tau_reference="none", dense_train_ce=dense_train_ce, floor_ce=None,
        best_step=None, dense=dense_metrics, before=dense_metrics, after=measure(model),
        policy={"name": DENSE_CONTROL}, history=[{**r, "phase": "control"} for r in result.history],
        evals=result.evals, wall_time_s=result.wall_time_s, machine=result.machine, model=model)
