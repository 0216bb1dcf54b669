"""Command line: ``python -m spartan_core post-train ...`` and ``python -m spartan_core count-edges ...``.

Every value is checked before any model is loaded or any file written; a bad one is refused with one line naming
the parameter (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

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
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: expected a number, got {text!r}") from None

    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_model_and_data(p):
    p.add_argument("--model", required=True,
                   help="registry name (addition-4l, shakespeare-lm, smollm2-135m), hub name (gpt2, ...) or local dir")
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
    p.add_argument("--out", type=Path, required=True, help="run directory (log.jsonl, checkpoints, summary.json)")
    p.add_argument("--steps", type=_positive_int("steps"), default=1000)
    p.add_argument("--batch-size", type=_positive_int("batch-size"), default=32)
    p.add_argument("--grad-accum", type=_accum, default=1,
                   help="micro-batches per step, or 'auto' (fewest that fit in GPU memory)")
    p.add_argument("--lr", type=_positive_float("lr"), default=3e-4)
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    p.add_argument("--warmup-steps", type=_nonneg_int("warmup-steps"), default=0)
    tau = p.add_mutually_exclusive_group()
    tau.add_argument("--tau", type=_positive_float("tau"), default=None, help="absolute CE target (nats/token)")
    tau.add_argument("--tau-factor", type=_positive_float("tau-factor"), default=1.0,
                     help="tau = factor x the dense model's measured eval CE (default 1.0)")
    p.add_argument("--eta", type=_positive_float("eta", allow_zero=True), default=0.5,
                   help="GECO step on log beta per nat of slack")
    p.add_argument("--alpha", type=_float("alpha"), default=0.99, help="EMA factor of the CE seen by GECO")
    p.add_argument("--beta-init", type=_positive_float("beta-init"), default=math.exp(-8))
    p.add_argument("--gate-bias", type=_float("gate-bias"), default=0.0)
    p.add_argument("--eval-every", type=_nonneg_int("eval-every"), default=100)
    p.add_argument("--eval-batches", type=_positive_int("eval-batches"), default=20)
    p.add_argument("--checkpoint-every", type=_nonneg_int("checkpoint-every"), default=100)
    p.add_argument("--seed", type=_nonneg_int("seed"), default=0)
    p.add_argument("--no-bf16", action="store_true", help="disable bf16 autocast on CUDA")
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--no-progress", action="store_true")

    c = sub.add_parser("count-edges", help="count kept attention edges of a (post-trained) sparse model",
                       description="Count the kept token->token edges of the deterministic sparse masks.")
    _add_model_and_data(c)
    c.add_argument("--checkpoint", type=Path, default=None,
                   help="a post-train --out directory whose final weights to load (default: untrained gates)")
    c.add_argument("--gate-bias", type=_float("gate-bias"), default=0.0)
    c.add_argument("--batch-size", type=_positive_int("batch-size"), default=16)
    c.add_argument("--max-batches", type=_positive_int("max-batches"), default=None)
    c.add_argument("--json", type=Path, default=None, help="also write the counts to this JSON file")
    return parser


_UNNAMESPACED_HUB_MODELS = {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2"}
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _check_model_name(name: str) -> None:
    from . import models

    if name in models.available() or name in _UNNAMESPACED_HUB_MODELS or Path(name).is_dir():
        return
    if _HUB_NAME.match(name):
        return
    raise UsageError(f"model: unknown name {name!r} (registry: {', '.join(models.available())}; "
                     f"or a hub name like gpt2 or EleutherAI/pythia-160m, or a local model directory)")


def _check(args) -> None:
    """Refuse bad values before any work starts (raises UsageError naming the parameter)."""
    from .train import resolve_device

    _check_model_name(args.model)
    try:
        resolve_device(args.device)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.data is not None and not (args.data.is_file() and os.access(args.data, os.R_OK)):
        raise UsageError(f"data: cannot read {args.data}")
    if getattr(args, "checkpoint", None) is not None:
        if not (args.checkpoint / "checkpoint" / "model.safetensors").is_file():
            raise UsageError(f"checkpoint: no post-train checkpoint in {args.checkpoint}")
    if args.command == "post-train" and args.grad_accum != "auto":
        if args.batch_size % args.grad_accum:
            raise UsageError(f"batch-size: {args.batch_size} is not divisible by grad-accum={args.grad_accum}")
    if args.command == "post-train" and args.out.exists() and not args.out.is_dir():
        raise UsageError(f"out: {args.out} exists and is not a directory")
    if args.command == "post-train" and not 0 <= args.alpha < 1:
        raise UsageError(f"alpha: must be in [0, 1), got {args.alpha}")


def _data(args, loaded) -> tuple[dict, dict]:
    """(train blocks, eval blocks): the text file split 90/10 by position, or the registry's own splits."""
    if args.data is not None:
        from .data.text import pack_blocks

        text = args.data.read_text(encoding="utf-8")
        ids = loaded.tokenizer(text)["input_ids"]
        blocks = pack_blocks(ids, args.seq_len)["input_ids"]
        if blocks.shape[0] < 2:
            raise UsageError(f"data: {args.data} is too short for two blocks of --seq-len {args.seq_len}")
        cut = max(1, int(blocks.shape[0] * 0.9))
        return {"input_ids": blocks[:cut]}, {"input_ids": blocks[cut:]}
    splits = loaded.data or {}
    held_out = next((splits[k] for k in ("validation", "test", "val") if k in splits), None)
    if "train" not in splits or held_out is None:
        raise UsageError(f"data: model {args.model!r} comes without data; pass --data FILE.txt")
    return splits["train"], held_out


def post_train(args) -> dict:
    from . import GECO, TrainConfig, evaluate, models, sparsify, train

    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        schedule=args.schedule, warmup_steps=args.warmup_steps, eval_every=args.eval_every,
        eval_max_batches=args.eval_batches, checkpoint_every=args.checkpoint_every, seed=args.seed,
        progress=not args.no_progress, device=args.device, bf16=not args.no_bf16,
        activation_checkpointing=args.activation_checkpointing,
    )
    loaded = models.load(args.model)
    train_data, eval_data = _data(args, loaded)
    model = loaded.model.to(config.device if config.device != "auto" else _auto_device())
    dense_eval = evaluate(model, eval_data, config.eval_batch_size, config.eval_max_batches)
    tau = args.tau if args.tau is not None else dense_eval["ce"] * args.tau_factor
    geco = GECO(tau, alpha=args.alpha, eta=args.eta, beta_init=args.beta_init)
    sparsify(model, gate_bias=args.gate_bias)
    args.out.mkdir(parents=True, exist_ok=True)
    result = train(model, train_data, config=config, eval_data=eval_data, geco=geco, out_dir=args.out,
                   desc=f"post-train {args.model}")
    final = evaluate(model, eval_data, config.eval_batch_size, config.eval_max_batches)
    summary = {
        "model": args.model, "data": str(args.data) if args.data else "registry", "tau": tau,
        "dense_eval_ce": dense_eval["ce"], "sparse_eval_ce": final["ce"],
        "kept_fraction": final["edges"].kept_fraction, "kept_per_query": final["edges"].kept_per_query,
        "best_step": result.best_step, "wall_time_s": result.wall_time_s, "steps": args.steps,
        "gate_bias": args.gate_bias,
    }
    with open(args.out / "summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def _auto_device():
    from .train import resolve_device

    return resolve_device("auto")


def count_edges_command(args) -> dict:
    from . import count_edges, models, sparsify
    from .train import iter_batches, load_checkpoint_weights, resolve_device

    loaded = models.load(args.model)
    _, eval_data = _data(args, loaded)
    model = sparsify(loaded.model.to(resolve_device(args.device)), gate_bias=args.gate_bias)
    if args.checkpoint is not None:
        load_checkpoint_weights(model, args.checkpoint)
    counts = count_edges(model, iter_batches(eval_data, args.batch_size, args.max_batches), progress=True)
    out = {"model": args.model, "checkpoint": str(args.checkpoint) if args.checkpoint else None,
           "kept_fraction": counts.kept_fraction, "kept_per_query": counts.kept_per_query,
           "per_layer": counts.per_layer, "per_head": counts.per_head}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(counts.to_json(indent=1))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check(args)
        started = time.perf_counter()
        if args.command == "post-train":
            out = post_train(args)
        else:
            out = count_edges_command(args)
    except UsageError as err:
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return 2
    out["command_wall_time_s"] = round(time.perf_counter() - started, 2)
    print(json.dumps({k: v for k, v in out.items() if k != "per_head"}, indent=1))
    return 0
