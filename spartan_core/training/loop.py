"""The one training loop: dense pretraining of the toy models and sparse post-training, told apart only by the
:class:`~spartan_core.objective.base.Objective` it is given. A killed run resumed from its last checkpoint ends
with the same weights as one that was never interrupted."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from ..objective.base import Objective
from .batches import find_grad_accum, sample_rows, take, validate_blocks
from .checkpoint import Checkpointer, Resumed, RunFolder, exclusive, open_run_dir, run_manifest
from .config import (TrainConfig, TrainingDiverged, TrainResult, autocast_for, describe_machine, lr_factor,
                     resolve_device, torch_threads)
from .distributed import Placement, processes
from .evaluate import evaluate

__all__ = ["train"]


def train(
    model: torch.nn.Module,
    train_data: dict,
    *,
    config: TrainConfig,
    eval_data: dict | None = None,
    objective: Objective | None = None,
    folder: RunFolder | None = None,
    desc: str = "train",
    on_step: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train ``model`` for ``config.steps`` optimiser steps on ``objective`` (default: plain CE).

    With a ``folder`` (:class:`~spartan_core.training.checkpoint.RunFolder`) the run logs to ``log.jsonl`` there
    (one record per step, evaluations as ``"eval_*"`` fields), checkpoints every ``checkpoint_every`` steps or
    ``checkpoint_seconds``, and resumes from the last checkpoint if ``run.json`` says it is the same run (settings,
    objective, the folder's ``identity``); another run raises
    :class:`~spartan_core.training.checkpoint.RunMismatch` unless the folder is ``fresh``. A step whose loss or
    gradients are not finite is not applied (:class:`TrainingDiverged`). With ``keep_best`` the model ends with
    the weights of the evaluation the objective scores best (for sparsity: fewest edges meeting tau).
    Under ``torchrun`` or ``accelerate launch`` the same call trains data-parallel, or sharded with ``fsdp``
    (:mod:`.distributed`): ``batch_size`` is the global batch, ``grad_accum`` each process's micro-batches.
    """
    objective = objective or Objective()
    n_rows = validate_blocks(train_data, "train_data")
    if eval_data is not None:
        validate_blocks(eval_data, "eval_data")
    objective.check(model)
    ranks = processes()
    if config.batch_size % ranks.count:
        raise ValueError(f"batch_size: {config.batch_size} rows cannot be shared by {ranks.count} processes")
    device = ranks.device(resolve_device(config.device))
    placed = ranks.place(model, device, config.fsdp, config.grad_accum)  # the one object that knows the layout
    _enable_checkpointing(model, config)
    grad_accum = config.grad_accum
    if grad_accum == "auto":
        share = TrainConfig(**{**config.__dict__, "batch_size": config.batch_size // ranks.count, "grad_accum": 1})
        grad_accum = int(ranks.max(find_grad_accum(model, train_data, share, objective)))
    if config.batch_size % (ranks.count * grad_accum):
        raise ValueError(f"grad_accum: {ranks.count} processes x {grad_accum} micro-batches do not divide "
                         f"batch_size={config.batch_size}")
    placed.wrap()
    decay = [p for p in placed.trained.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in placed.trained.parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.95))
    saved_optimizer = placed.checkpointed(optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config))
    result = TrainResult(model=model)
    best = {"score": math.inf, "step": None, "state": None}
    torch.manual_seed(config.seed)  # sampled gates and dropout; a resumed run restores the checkpoint's RNG states
    out = folder.path if folder is not None else None
    checkpointer = log_path = None
    start_step, earlier = 0, 0.0  # earlier: training time of a resumed run's earlier segments
    with contextlib.ExitStack() as held:
        held.enter_context(torch_threads(config.threads))
        result.machine = describe_machine(device)
        if out is not None and ranks.main:
            out.mkdir(parents=True, exist_ok=True)
            held.enter_context(exclusive(out))
            checkpointer, log_path, resumed = open_run_dir(out, run_manifest(config, objective, folder.identity),
                                                          folder.fresh, model, saved_optimizer, scheduler, objective)
        ranks.barrier()  # the other processes resume from what process 0 has just checked
        if out is not None and not ranks.main:
            resumed = _resume_from(out, model, saved_optimizer, scheduler, objective)
        if out is not None and resumed is not None:
            placed.resumed()
            start_step = result.resumed_from = resumed.step
            earlier = resumed.wall_time_s
            best.update(score=resumed.best_score, step=resumed.best_step)
            result.history = [r for r in resumed.records if "ce" in r]
            result.evals = [r for r in resumed.records if "eval_ce" in r]
        log_file = held.enter_context(open(log_path, "a")) if log_path is not None else None
        bar = held.enter_context(_progress(config, start_step, desc)) if ranks.main else None
        steps = _Steps(placed, train_data, n_rows, grad_accum, config, objective, optimizer, scheduler, checkpointer)
        started = last_saved = time.perf_counter()
        for step in range(start_step + 1, config.steps + 1):
            record = steps.take(step)
            if eval_data is not None and (step == config.steps or (config.eval_every and step % config.eval_every == 0)):
                _evaluate_into(record, placed.trained, eval_data, config)
                result.evals.append({k: v for k, v in record.items() if k == "step" or k.startswith("eval_")})
                score = objective.selection_score(record.pop("_metrics"))
                if config.keep_best and score is not None and score < best["score"]:
                    best.update(score=score, step=step)
                    placed.gather(everywhere=out is None)
                    if ranks.main or out is None:  # the other processes read process 0's file at the end
                        _keep_best(model, out, best)
            result.history.append({k: v for k, v in record.items() if not k.startswith("eval_")})
            if log_file is not None:
                log_file.write(_json_line(record))
                log_file.flush()
            if bar is not None:
                bar.set_postfix(_postfix(record, objective), refresh=False)
                bar.update(1)
            if on_step is not None:
                on_step(record)
            timed = config.checkpoint_seconds and time.perf_counter() - last_saved >= config.checkpoint_seconds
            due = out is not None and bool(step == config.steps or timed or (
                config.checkpoint_every and step % config.checkpoint_every == 0))
            due = placed.checkpoint_due(due)
            if checkpointer is not None and due:
                checkpointer.save(model, saved_optimizer, scheduler, objective, step,
                                  {"best_step": best["step"], "best_score": best["score"],
                                   "wall_time_s": earlier + time.perf_counter() - started})
                last_saved = time.perf_counter()
    placed.finish()
    if config.keep_best and best["step"] is not None:
        if best["state"] is not None:
            model.load_state_dict(best["state"])
        elif out is not None and (out / "best.safetensors").exists():
            load_model(model, str(out / "best.safetensors"), device=str(device))
    else:
        placed.gather()
    result.best_step = best["step"]
    result.wall_time_s = earlier + time.perf_counter() - started
    return result


@dataclass(frozen=True)
class _Steps:
    """What every optimiser step of a run reads, set once before the first: the loop then takes step after step."""

    placed: Placement
    data: dict
    n_rows: int
    grad_accum: int
    config: TrainConfig
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    checkpointer: Checkpointer | None

    def take(self, step: int) -> dict:
        """One optimiser step over ``grad_accum`` micro-batches of this process's share of the global batch
        (forward passes through ``placed.wrapped``, DDP when launched); returns its log record. Nothing non-finite
        is applied."""
        placed, config, objective, grad_accum = self.placed, self.config, self.objective, self.grad_accum
        model, ranks, device = placed.trained, placed.ranks, placed.device
        model.train()
        t0 = time.perf_counter()
        ce_sum = 0.0
        tokens = 0
        objective.begin_step()
        micro_batches = sample_rows(self.n_rows, config.batch_size, config.seed, step).split(
            config.batch_size // (ranks.count * grad_accum))
        for local in range(grad_accum):
            index = ranks.index * grad_accum + local
            if ranks.engine:  # the same masks whichever process draws this micro-batch
                torch.manual_seed((config.seed * 1_000_003 + step) * 65_537 + index)
            batch = take(self.data, micro_batches[index], device)
            with ranks.no_sync(placed.wrapped, sync=local == grad_accum - 1):
                with autocast_for(device, config.bf16):
                    output = placed.wrapped(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                                            labels=batch["labels"], use_cache=False)
                    ce = output.loss.float()
                    loss = objective.loss(model, ce)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"step {step}: loss is {float(loss.detach())} (CE {float(ce.detach())}); "
                                           f"stopping. {_last_checkpoint(self.checkpointer)} Try a lower lr or a "
                                           "smaller GECO eta.")
                (loss / grad_accum).backward()
            ce_sum += float(ce.detach())
            tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        grad_norm = ranks.whole(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or math.inf))
        if not torch.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(f"step {step}: gradient norm is {float(grad_norm)} (CE {ce_sum / grad_accum:.4g}); "
                                   f"the step was not applied. {_last_checkpoint(self.checkpointer)} "
                                   "Try a lower lr or a smaller GECO eta.")
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        ce_mean = ranks.mean(ce_sum / grad_accum)
        objective.reduce(ranks.mean)
        record = {"step": step, "ce": ce_mean, "lr": lr, **objective.end_step(ce_mean, grad_accum)}
        record["tokens_per_s"] = ranks.sum(tokens) / max(time.perf_counter() - t0, 1e-9)
        return record


def _resume_from(out: Path, model, optimizer, scheduler, objective) -> Resumed | None:
    """A process other than 0 resumes from the checkpoint process 0 has checked; it never writes."""
    checkpointer = Checkpointer(out)
    latest = checkpointer.latest()
    if latest is None:
        return None
    info = checkpointer.load(latest, model, optimizer, scheduler, objective)
    return Resumed.from_checkpoint(info, [])


def _evaluate_into(record: dict, model, eval_data: dict, config: TrainConfig) -> None:
    metrics = evaluate(model, eval_data, config.eval_batch_size, config.eval_max_batches, config.bf16)
    record.update(eval_ce=metrics.ce, eval_token_accuracy=metrics.token_accuracy,
                  eval_sequence_accuracy=metrics.sequence_accuracy)
    if metrics.edges is not None:
        record.update(eval_kept_fraction=metrics.edges.kept_fraction, eval_kept_per_query=metrics.edges.kept_per_query)
    record["_metrics"] = metrics


def _keep_best(model, out: Path | None, best: dict) -> None:
    if out is not None:
        save_model(model, str(out / "best.safetensors.tmp"))
        os.replace(out / "best.safetensors.tmp", out / "best.safetensors")
    else:
        best["state"] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _last_checkpoint(checkpointer) -> str:
    last = checkpointer.latest() if checkpointer is not None else None
    return f"Last finite checkpoint: {last}." if last else "No checkpoint was written."


def _enable_checkpointing(model, config: TrainConfig) -> None:
    if not config.activation_checkpointing:
        return
    # non-reentrant: the gate statistics leave each layer as a side output, which the reentrant variant would
    # detach from the graph (the regulariser would silently get no gradient)
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


@contextlib.contextmanager
def _progress(config: TrainConfig, start_step: int, desc: str):
    if not config.progress:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=config.steps, initial=start_step, desc=desc, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


def _postfix(record: dict, objective: Objective) -> dict:
    postfix = {"ce": f"{record['ce']:.4f}", **objective.progress(record)}
    if "eval_kept_fraction" in record:
        postfix["eval_kept"] = f"{record['eval_kept_fraction']:.4f}"
    return postfix


def _json_line(record: dict) -> str:
    return json.dumps(record) + "\n"
