"""Command line: ``python -m spartan_core post-train ...``, ``count-edges ...`` and ``estimate-memory ...``.

Every value is checked before any model is loaded or any file written; a bad one is refused with one line naming
the parameter (exit status 2).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from . import zoo  # noqa: E402  (after the offline defaults)
from ._util import atomic_write_text, file_sha256, write_json  # noqa: E402
from .data.files import context_length, read_text_file, text_file_blocks  # noqa: E402
from .mechanism.policies import POLICIES  # noqa: E402
from .objective.geco import CONTROLLERS  # noqa: E402
from .objective.tau import TAU_REFERENCES  # noqa: E402
from .training import (RunBusy, RunFolder, TrainingDiverged, iter_batches, load_checkpoint_weights,  # noqa: E402
                       resolve_device)
from .training.checkpoint import weight_files  # noqa: E402
from .training.posttrain import DENSE_CONTROL  # noqa: E402
from .training.distributed import processes  # noqa: E402
from .training.posttrain import SparseRecipe  # noqa: E402
from .zoo.released import check_released_name  # noqa: E402
from .zoo.registry import entry_for  # noqa: E402

__all__ = ["main", "build_parser"]


class UsageError(ValueError):
    """A parameter the user gave is wrong; the message names it."""


def _positive_int(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: expected an integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name}: must be >= 1, got {value}")
        return value

    return parse


def _accum(text):
    return "auto" if text == "auto" else _positive_int("grad-accum")(text)


def _nonneg_int(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: expected an integer, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{name}: must be >= 0, got {value}")
        return value

    return parse


def _positive_float(name, allow_zero=False):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"{name}: must be {'>= 0' if allow_zero else '> 0'}, got {text}")
        return value

    return parse


def _float(name):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: expected a number, got {text!r}") from None
        if math.isnan(value):
            raise argparse.ArgumentTypeError(f"{name}: must be a number, got {text!r}")
        return value

    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_model_and_data(p):
    p.add_argument("--model", required=True,
                   help="registry name (addition-4l, ...), hub name (gpt2, ...) or a local model directory")
    p.add_argument("--data", type=Path, default=None,
                   help="UTF-8 text file to train/count on (default: the model's own data from the registry)")
    p.add_argument("--seq-len", type=_positive_int("seq-len"), default=128, help="block length for --data text")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1 ...")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m spartan_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("post-train", help="sparsify a causal LM and post-train it under GECO",
                       description="Sparsify a causal LM and post-train it so that CE stays <= tau with as few "
                                   "attention edges as possible.")
    _add_model_and_data(p)
    recipe = SparseRecipe()  # the command line's defaults are the recipe's defaults
    p.add_argument("--out", type=Path, required=True,
                   help="run directory (run.json, floor/ and geco/ phases with log.jsonl and checkpoints, "
                        "model.safetensors, summary.json)")
    p.add_argument("--steps", type=_positive_int("steps"), default=recipe.steps)
    p.add_argument("--batch-size", type=_positive_int("batch-size"), default=recipe.batch_size)
    p.add_argument("--grad-accum", type=_accum, default=1,
                   help="micro-batches per step, or 'auto' (fewest that fit in GPU memory)")
    p.add_argument("--lr", type=_positive_float("lr"), default=recipe.lr)
    p.add_argument("--schedule", choices=["cosine", "constant"], default=recipe.schedule)
    p.add_argument("--warmup-steps", type=_nonneg_int("warmup-steps"), default=recipe.warmup_steps)
    p.add_argument("--weight-decay", type=_positive_float("weight-decay", allow_zero=True), default=recipe.weight_decay)
    p.add_argument("--grad-clip", type=_positive_float("grad-clip", allow_zero=True), default=recipe.grad_clip)
    tau = p.add_mutually_exclusive_group()
    tau.add_argument("--tau", type=_positive_float("tau"), default=None, help="absolute CE target (nats/token)")
    tau.add_argument("--tau-factor", type=_positive_float("tau-factor"), default=recipe.tau_factor,
                     help="tau = factor x the reference CE (see --tau-reference)")
    p.add_argument("--tau-reference", choices=TAU_REFERENCES, default=recipe.tau_reference,
                   help="dense: the dense model's CE on the training blocks; floor: the sampled-mask CE after "
                        "--floor-steps with beta at its minimum")
    p.add_argument("--tau-min", type=_positive_float("tau-min", allow_zero=True), default=recipe.tau_min,
                   help="a relative tau is never below this (the sampled-mask CE has a floor)")
    p.add_argument("--floor-steps", type=_nonneg_int("floor-steps"), default=recipe.floor_steps)
    p.add_argument("--eta", type=_positive_float("eta", allow_zero=True), default=recipe.eta,
                   help="GECO step on log beta per nat of slack")
    p.add_argument("--alpha", type=_float("alpha"), default=recipe.alpha, help="EMA factor of the CE seen by GECO")
    p.add_argument("--beta-init", type=_positive_float("beta-init"), default=recipe.beta_init)
    p.add_argument("--gate-bias", type=_float("gate-bias"), default=recipe.gate_bias)
    p.add_argument("--controller", choices=CONTROLLERS, default=recipe.controller,
                   help="how beta moves: geco, fixed (beta stays at --beta-init: a penalty), pi (GECO + a "
                        "proportional term, nuPI)")
    p.add_argument("--kp", type=_positive_float("kp", allow_zero=True), default=None,
                   help="proportional gain of --controller pi (default eta / (1 - alpha))")
    p.add_argument("--policy", choices=("gate", DENSE_CONTROL, *POLICIES), default=recipe.policy,
                   help="gate (learned, the paper), dense (the compute-matched control: the same steps with no "
                        "gate) or a fixed mask baseline fine-tuned on plain CE")
    p.add_argument("--keys-per-query", type=_positive_float("keys-per-query"), default=None,
                   help="the budget of a fixed --policy: kept keys per query")
    p.add_argument("--eval-every", type=_nonneg_int("eval-every"), default=recipe.eval_every,
                   help="steps between evaluations on the training blocks (where the kept checkpoint is chosen)")
    p.add_argument("--eval-batches", type=_positive_int("eval-batches"), default=recipe.eval_max_batches)
    p.add_argument("--eval-batch-size", type=_positive_int("eval-batch-size"), default=recipe.eval_batch_size)
    p.add_argument("--checkpoint-every", type=_nonneg_int("checkpoint-every"), default=100)
    p.add_argument("--seed", type=_nonneg_int("seed"), default=recipe.seed, help="training seed")
    p.add_argument("--threads", type=_positive_int("threads"), default=recipe.threads,
                   help="torch CPU threads while training (default: as set); the same seed at another thread "
                        "count trains other weights")
    p.add_argument("--lora-rank", type=_positive_int("lora-rank"), default=None,
                   help="train rank-R LoRA adapters (peft) on the attention projections instead of every weight")
    p.add_argument("--lora-mlp", action="store_true", help="with --lora-rank: adapters on the MLPs too")
    p.add_argument("--no-bf16", action="store_true", help="disable bf16 autocast on CUDA")
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--fsdp", action="store_true",
                   help="shard the weights over the launched processes (torchrun / accelerate launch with N >= 2; "
                        "accelerate launch --use_fsdp does the same)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--fresh", action="store_true",
                   help="discard what --out holds and start over (default: resume the same run, refuse another)")

    c = sub.add_parser("count-edges", help="count kept attention edges of a (post-trained) sparse model",
                       description="Count the kept token->token edges of the deterministic sparse masks.")
    _add_model_and_data(c)
    c.add_argument("--checkpoint", type=Path, default=None,
                   help="a post-train --out directory: loads the weights its summary reports (model.safetensors), "
                        "else its last checkpoint (default: untrained gates)")
    c.add_argument("--gate-bias", type=_float("gate-bias"), default=0.0)
    c.add_argument("--batch-size", type=_positive_int("batch-size"), default=16)
    c.add_argument("--max-batches", type=_positive_int("max-batches"), default=None)
    c.add_argument("--json", type=Path, default=None, help="also write the counts to this JSON file")

    m = sub.add_parser("estimate-memory", help="memory per process of a post-training run, before it starts",
                       description="Estimate the accelerator memory each process of a post-training run needs "
                                   "(from the model's config: no weights are loaded).")
    m.add_argument("--model", required=True, help="registry name, hub name (config in the local cache) or directory")
    m.add_argument("--seq-len", type=_positive_int("seq-len"), default=None,
                   help="tokens per row (default: the model's registered recipe's block size)")
    m.add_argument("--micro-batch", type=_positive_int("micro-batch"), default=1, help="rows per micro-batch")
    m.add_argument("--processes", type=_positive_int("processes"), default=1)
    m.add_argument("--fsdp", action="store_true", help="weights, gradients and optimiser sharded over --processes")
    m.add_argument("--lora-rank", type=_positive_int("lora-rank"), default=None,
                   help="LoRA adapters of this rank (default: the registered recipe's; --full-weights for none)")
    m.add_argument("--lora-mlp", action="store_true")
    m.add_argument("--full-weights", action="store_true", help="every weight trains, whatever the recipe says")
    m.add_argument("--activation-checkpointing", action="store_true")
    m.add_argument("--limit-gib", type=_positive_float("limit-gib"), default=80.0,
                   help="memory of one accelerator, to say whether the run fits (default 80)")
    return parser


_UNNAMESPACED_HUB_MODELS = {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2"}
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _check_model_name(name: str) -> None:
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise UsageError(f"model: {local} is a directory without config.json (not a model saved with "
                             "save_pretrained)")
        return
    try:
        check_released_name(name)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if name in zoo.available() or name in _UNNAMESPACED_HUB_MODELS or _HUB_NAME.match(name):
        return
    raise UsageError(f"model: unknown name {name!r} (registry: {', '.join(zoo.available())}; "
                     f"or a hub name like gpt2 or EleutherAI/pythia-160m, or a local model directory)")


def _check_writable(path: Path, name: str) -> None:
    """Probe where ``path`` would be created (its nearest existing folder) without creating it."""
    existing = path.expanduser().absolute()
    while not existing.exists():
        existing = existing.parent
    if existing != path.expanduser().absolute() and not existing.is_dir():
        raise UsageError(f"{name}: cannot create {path}: {existing} is a file")
    folder = existing if existing.is_dir() else existing.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UsageError(f"{name}: cannot write to {folder} ({err.strerror or err})") from None


def _recipe(args) -> SparseRecipe:
    """The post-training recipe the arguments ask for (the same object the Python API takes)."""
    return SparseRecipe(
        steps=args.steps, lr=args.lr, batch_size=args.batch_size, schedule=args.schedule,
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, grad_clip=args.grad_clip, tau=args.tau,
        tau_factor=args.tau_factor, tau_reference=args.tau_reference, tau_min=args.tau_min,
        floor_steps=args.floor_steps, eta=args.eta, alpha=args.alpha, beta_init=args.beta_init,
        gate_bias=args.gate_bias, controller=args.controller, kp=args.kp, policy=args.policy,
        keys_per_query=args.keys_per_query, eval_every=args.eval_every, eval_batch_size=args.eval_batch_size,
        eval_max_batches=args.eval_batches, seed=args.seed, threads=args.threads, lora_rank=args.lora_rank,
        lora_mlp=args.lora_mlp)


def _check(args) -> None:
    """Refuse bad values before any work starts (raises UsageError naming the parameter)."""
    _check_model_name(args.model)
    if args.command == "estimate-memory":
        if args.fsdp and args.processes < 2:
            raise UsageError("fsdp: shards over several processes; pass --processes N (N >= 2)")
        if args.full_weights and (args.lora_rank is not None or args.lora_mlp):
            raise UsageError("full-weights: every weight trains; drop --lora-rank/--lora-mlp")
        return
    try:
        resolve_device(args.device)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.data is not None:
        if not (args.data.is_file() and os.access(args.data, os.R_OK)):
            raise UsageError(f"data: cannot read {args.data}")
        if args.seq_len < 2:
            raise UsageError(f"seq-len: must be >= 2 (a block needs an input and a next token), got {args.seq_len}")
    if getattr(args, "checkpoint", None) is not None:
        if not any(f.is_file() for f in weight_files(args.checkpoint)):
            raise UsageError(f"checkpoint: no post-train weights in {args.checkpoint}")
    if getattr(args, "json", None) is not None:
        if args.json.is_dir():
            raise UsageError(f"json: {args.json} is a directory")
        _check_writable(args.json, "json")
    if args.command == "post-train":
        try:
            sharded = processes().sharding(args.fsdp)
        except ValueError as err:
            raise UsageError(str(err)) from None
        if sharded and args.grad_accum == "auto":
            raise UsageError("grad-accum: 'auto' measures the whole model on one device; with --fsdp give a number")
        if args.grad_accum != "auto" and args.batch_size % args.grad_accum:
            raise UsageError(f"batch-size: {args.batch_size} is not divisible by grad-accum={args.grad_accum}")
        if args.out.exists() and not args.out.is_dir():
            raise UsageError(f"out: {args.out} exists and is not a directory")
        _check_writable(args.out, "out")
        try:
            _recipe(args)
        except ValueError as err:  # the recipe names its field; the command line spells it as an option
            name, _, rest = str(err).partition(":")
            raise UsageError(f"{name.replace('_', '-')}:{rest}") from None


def _registry_splits(args, loaded) -> tuple[dict, dict]:
    splits = loaded.data or {}
    held_out = splits.get(entry_for(args.model).heldout_split)
    if "train" not in splits or held_out is None:
        raise UsageError(f"data: model {args.model!r} comes without data; pass --data FILE.txt")
    return splits["train"], held_out


def _load_with_data(args):
    """(loaded model, train blocks, held-out blocks). A data file is read, decoded, tokenised and length-checked
    before a registry toy's first-use training (its tokenizer needs no model), else right after loading."""
    text = read_text_file(args.data) if args.data is not None else None
    blocks = None
    toy = zoo.tokenizer_and_context(args.model) if text is not None else None
    if toy is not None:
        blocks = text_file_blocks(args.data, text, args.model, args.seq_len, *toy)
    try:
        loaded = zoo.load(args.model, progress=not getattr(args, "no_progress", False))
    except zoo.HubUnavailableError as err:
        raise UsageError(f"model: {err}") from None
    if text is None:
        return (loaded, *_registry_splits(args, loaded))
    if blocks is None:
        blocks = text_file_blocks(args.data, text, args.model, args.seq_len, loaded.tokenizer,
                                  context_length(loaded.model))
    return (loaded, *blocks)


def _identity(args, recipe: SparseRecipe) -> dict:
    """What makes a post-train run this run (kept in ``--out/run.json``, and inside each phase's manifest)."""
    data = "registry"
    if args.data is not None:
        data = {"path": str(args.data), "sha256": file_sha256(args.data),
                "seq_len": args.seq_len}
    return {"command": "post-train", "model": args.model, "data": data, "recipe": recipe.identity()}


def _finished_run(args, identity: dict) -> dict | None:
    """The summary of the same run when ``--out`` already holds it finished; refuse another run's directory."""
    from .training.checkpoint import manifest_difference

    manifest_file = args.out / "run.json"
    if args.fresh or not manifest_file.is_file():
        return None
    try:
        stored = json.loads(manifest_file.read_text())
    except json.JSONDecodeError:
        raise UsageError(f"out: {manifest_file} is torn; pass --fresh to start over") from None
    difference = manifest_difference(stored, identity)
    if difference:
        raise UsageError(f"out: {args.out} holds another run ({difference}); use another --out or pass --fresh "
                         "to discard it")
    summary_file = args.out / "summary.json"
    if not summary_file.is_file():
        return None
    print(f"post-train: {args.out} already holds this finished run; returning its result without training "
          "(--fresh retrains)", file=sys.stderr)
    return {**json.loads(summary_file.read_text()), "reused": True}


def post_train(args) -> dict:
    from safetensors.torch import save_model

    from .training.checkpoint import exclusive
    from .training.posttrain import post_train as run_recipe

    recipe = _recipe(args)
    identity = _identity(args, recipe)
    finished = _finished_run(args, identity)
    if finished is not None:
        return finished
    loaded, train_data, heldout = _load_with_data(args)  # refuses bad data before anything is written
    args.out.mkdir(parents=True, exist_ok=True)
    ranks = processes()  # under torchrun / accelerate launch, process 0 alone writes
    with exclusive(args.out) if ranks.main else contextlib.nullcontext():
        finished = _finished_run(args, identity)  # another process may have finished it meanwhile
        if finished is not None:
            return finished
        if args.fresh and ranks.main:
            for name in ("summary.json", "model.safetensors"):
                (args.out / name).unlink(missing_ok=True)
        if ranks.main:
            write_json(args.out / "run.json", identity)
        result = run_recipe(
            loaded.model, train_data, heldout, recipe, extra_metrics=entry_for(args.model).heldout_metrics,
            folder=RunFolder(args.out, identity, args.fresh), desc=f"post-train {args.model}",
            progress=not args.no_progress, device=args.device, grad_accum=args.grad_accum, checkpoint_every=args.checkpoint_every,
            bf16=not args.no_bf16, activation_checkpointing=args.activation_checkpointing, fsdp=args.fsdp)
        if not ranks.main:
            return {"process": ranks.index, "of": ranks.count, "written_by": "process 0"}
        save_model(result.model, str(args.out / "model.safetensors.tmp"))
        os.replace(args.out / "model.safetensors.tmp", args.out / "model.safetensors")
        weights_step = result.best_step if result.best_step is not None else recipe.floor_steps + recipe.steps
        summary = {
            "model": args.model, "data": str(args.data) if args.data else "registry", "tau": result.tau,
            "tau_reference": result.tau_reference, "dense_train_ce": result.dense_train_ce,
            "floor_ce": result.floor_ce, "dense_heldout_ce": result.dense.ce,
            "sparse_heldout_ce": result.after.ce, "kept_fraction": result.after.kept_fraction,
            "kept_per_query": result.after.kept_per_query, "best_step": result.best_step,
            "wall_time_s": result.wall_time_s, "steps": recipe.steps, "gate_bias": recipe.gate_bias,
            "controller": recipe.controller, "policy": result.policy or recipe.policy,
            "weights": "model.safetensors", "weights_step": weights_step,
            "weights_sha256": file_sha256(args.out / "model.safetensors"), "seed": recipe.seed,
            "trained_on": result.machine,
            "weights_are": (f"the evaluation with the fewest kept edges that met tau (step {weights_step})"
                            if result.best_step is not None else "the last step (no evaluation met tau)"
                            if recipe.policy == "gate" else "the last step (a control or fixed policy has no tau)"),
        }
        write_json(args.out / "summary.json", summary)
    return summary


def count_edges_command(args) -> dict:
    from . import count_edges, sparsify
    from .mechanism.policies import MaskPolicy

    loaded, _, eval_data = _load_with_data(args)
    summary_file = args.checkpoint / "summary.json" if args.checkpoint is not None else None
    summary = json.loads(summary_file.read_text()) if summary_file is not None and summary_file.is_file() else None
    policy = summary.get("policy") if summary is not None else None
    if isinstance(policy, dict) and policy["name"] == DENSE_CONTROL:
        raise ValueError(f"checkpoint: {args.checkpoint} is a dense control run, which keeps every edge")
    model = sparsify(loaded.model.to(resolve_device(args.device)), gate_bias=args.gate_bias,
                     policy=MaskPolicy(**policy) if isinstance(policy, dict) else None)  # a baseline run's mask
    weights = "untrained gates"
    if args.checkpoint is not None:
        _, weights = load_checkpoint_weights(model, args.checkpoint)
        if Path(weights).name == "model.safetensors" and Path(weights).parent == args.checkpoint and summary is not None:
            weights += f" ({summary.get('weights_are', 'what post-train reported')})"
        elif Path(weights).parent.name == "checkpoint":
            weights += " (the last checkpointed step: post-train has not finished)"
    counts = count_edges(model, iter_batches(eval_data, args.batch_size, args.max_batches), progress=True)
    out = {"model": args.model, "checkpoint": str(args.checkpoint) if args.checkpoint else None,
           "weights": weights, "kept_fraction": counts.kept_fraction, "kept_per_query": counts.kept_per_query,
           "per_layer": counts.per_layer, "per_head": counts.per_head}
    if args.json is not None:
        atomic_write_text(args.json, counts.to_json(indent=1))  # a unique temporary name: no planted link followed
    return out


def estimate_memory_command(args) -> dict:
    from .training.memory import GIB, estimate_from_config

    recipe = zoo.default_sparse_recipe(args.model)
    rank = None if args.full_weights else args.lora_rank or recipe.lora_rank
    try:
        config = zoo.model_config(args.model)
    except zoo.HubUnavailableError as err:
        raise UsageError(f"model: {err}") from None
    estimate = estimate_from_config(config, lora_rank=rank, lora_mlp=args.lora_mlp or recipe.lora_mlp,
                                    seq_len=args.seq_len or recipe.block_size, micro_batch=args.micro_batch,
                                    processes=args.processes, sharded=args.fsdp,
                                    activation_checkpointing=args.activation_checkpointing)
    print(estimate.sentence, file=sys.stderr)
    return {"model": args.model, "lora_rank": rank, "parameters": estimate.parameters,
            "trainable": estimate.trainable, "seq_len": estimate.seq_len, "micro_batch": estimate.micro_batch,
            "processes": estimate.processes, "sharded": estimate.sharded,
            "gib_per_process": {name: round(size / GIB, 2) for name, size in estimate.parts.items()},
            "total_gib_per_process": round(estimate.total / GIB, 2), "limit_gib": args.limit_gib,
            "fits": estimate.fits(args.limit_gib)}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prefix = f"{parser.prog} {args.command}: error:"
    try:
        _check(args)
        started = time.perf_counter()
        if args.command == "post-train":
            out = post_train(args)
        elif args.command == "estimate-memory":
            out = estimate_memory_command(args)
        else:
            out = count_edges_command(args)
    except (UsageError, ValueError, RunBusy) as err:  # library ValueErrors name their parameter too
        print(f"{prefix} {_one_line(err)}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"{prefix} training diverged: {_one_line(err)}", file=sys.stderr)
        return 3
    except OSError as err:
        print(f"{prefix} {_one_line(err)}", file=sys.stderr)
        return 1
    out["command_wall_time_s"] = round(time.perf_counter() - started, 2)
    print(json.dumps({k: v for k, v in out.items() if k != "per_head"}, indent=1))
    return 0


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
