"""Toy models trained here: a GPT-2 architecture from the registry entry, pretrained on first use through the
one training loop and cached under a key of everything that made it (any override is its own model)."""

from __future__ import annotations

import time
from typing import Any

import torch

from .._util import read_jsonl
from ..training.checkpoint import RunFolder
from ..training.config import TrainConfig
from ..training.posttrain import CHECKPOINT_EVERY, CHECKPOINT_SECONDS
from .cache import FORMAT_VERSION, config_hash, from_cache, is_built, locked, model_cache_dir, publish, verified_info
from .loaded import LoadedModel, Pretraining, to_device, used
from .registry import ModelEntry, toy_settings

__all__ = ["load_toy", "toy_tokenizer"]

_UNKEYED = ("progress", "device", "checkpoint_every", "checkpoint_seconds")  # do not change what is learnt


def toy_tokenizer(entry: ModelEntry, *, cache_dir=None) -> tuple[Any, int]:
    """(tokenizer, context length) of a toy at its defaults, without training it: the command line checks a
    data file against them before the model's first-use training starts."""
    architecture, data, _ = toy_settings(entry, {})
    tokenizer, _ = entry.build_data(data, cache_dir)
    return tokenizer, architecture["n_positions"]


def _gpt2(architecture: dict, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    eos = getattr(tokenizer, "eos_token_id", None)
    config = GPT2Config(
        **{"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, **architecture},
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
    )
    return GPT2LMHeadModel(config)


def load_toy(entry: ModelEntry, *, cache_dir, progress: bool, overrides: dict) -> LoadedModel:
    from transformers import GPT2LMHeadModel

    from ..training.loop import train

    overrides = dict(overrides)
    device = overrides.pop("device", "auto")
    overrides.pop("progress", None)
    architecture, data, pretrain = toy_settings(entry, overrides)
    keyed = {"name": entry.name, "format": FORMAT_VERSION, "architecture": architecture, "data": data,
             "pretrain": {k: v for k, v in pretrain.items() if k not in _UNKEYED}}
    if entry.data_identity is not None:
        keyed["dataset"] = entry.data_identity(data)
    key = config_hash(keyed)
    final = model_cache_dir(cache_dir) / entry.name / key
    tokenizer, splits = entry.build_data(data, cache_dir)
    trained_now = False
    with locked(final, lambda: is_built(final)) as build:
        if build:
            config = TrainConfig.from_dict({"checkpoint_every": CHECKPOINT_EVERY,
                                            "checkpoint_seconds": CHECKPOINT_SECONDS, **pretrain,
                                            "progress": progress, "device": device})
            torch.manual_seed(config.seed)  # the initial weights: a model trained here is the same model everywhere
            model = _gpt2(architecture, tokenizer)
            run_dir = final.with_name(final.name + ".run")
            result = train(model, splits["train"], config=config, folder=RunFolder(run_dir, {"cache_key": key}),
                           desc=f"pretrain {entry.name}")
            info = {
                "name": entry.name, "source": "trained here", "key": key, "recipe": keyed,
                "heldout_split": entry.heldout_split,
                "seed": config.seed, "trained_on": result.machine, "dataset": keyed.get("dataset"),
                "train_wall_time_s": result.wall_time_s, "resumed_from": result.resumed_from,
                "n_params": sum(p.numel() for p in model.parameters()),
                "metrics": entry.dense_metrics(model, splits, config.eval_batch_size),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            publish(final, run_dir, model, info, result.history, result.evals, tokenizer=tokenizer)
            trained_now = True
    info = verified_info(final)
    model = from_cache(final, GPT2LMHeadModel.from_pretrained)
    info.update(cache_dir=str(final), trained_now=trained_now,
                call={"fn": "load", "name": entry.name, "overrides": overrides})
    return used(LoadedModel(name=entry.name, model=to_device(model, device).eval(), tokenizer=tokenizer, data=splits,
                            info=info, history=read_jsonl(final / "history.jsonl"),
                            evals=read_jsonl(final / "evals.jsonl"), pretraining=Pretraining.from_info(info)))
