"""Where models come from: toy models trained here, the packaged SmolLM2-135M, hub names, local directories.

``load(name)`` returns a :class:`LoadedModel` (model, tokenizer, its datasets, and an ``info`` dict saying how it
was made). ``load_sparse(name, recipe)`` returns the same for a sparse post-trained copy (the one recipe,
:func:`spartan_core.training.post_train`), with the training history. Both are cached (:mod:`.cache`): any
override (e.g. ``steps=20``) is its own model, trained on first use with a progress bar and reloaded in about a
second afterwards; a killed first-use training resumes from its checkpoint. What differs between models is data
in :mod:`.registry`.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .._util import HubUnavailableError, read_jsonl
from ..mechanism.policies import MaskPolicy
from ..mechanism.sparsify import dense as to_dense
from ..mechanism.sparsify import sparsify
from ..training.checkpoint import RunFolder
from ..training.posttrain import PostTrainResult, SparseRecipe, post_train
from .cache import (FORMAT_VERSION, CacheCorrupt, config_hash, from_cache, is_built, locked, model_cache_dir,
                    publish, verified_info)
from .hub import load_hub
from .released import RELEASED, check_released_name, load_released
from .loaded import LoadedModel, to_device, used, used_models
from .registry import REGISTRY, ModelEntry, available, default_sparse_recipe, entry_for, model_config
from .smollm2 import load_smollm2
from .toys import load_toy, toy_tokenizer

__all__ = ["LoadedModel", "ModelEntry", "REGISTRY", "available", "entry_for", "load", "load_sparse", "model_config",
           "default_sparse_recipe", "tokenizer_and_context", "used_models", "CacheCorrupt", "HubUnavailableError"]


def load(name: str, *, cache_dir=None, progress: bool = True, **overrides) -> LoadedModel:
    """Load a model by name: ``"addition-4l"``, ``"shakespeare-lm"``, ``"python-lm"`` (trained and cached on first
    use; overrides such as ``steps=20``, ``n_layer=2``, ``block_size=64`` make a different cached model),
    ``"smollm2-135m"``, any
    hub name (``"gpt2"``, ``"EleutherAI/pythia-160m"``) or a local directory. ``device=`` (default ``"auto"``)
    places the result without changing the cache key."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a model name, got {name!r}")
    entry = entry_for(name)
    if entry.source == "toy":
        return load_toy(entry, cache_dir=cache_dir, progress=progress, overrides=overrides)
    if entry.source == "gguf":
        return load_smollm2(cache_dir=cache_dir, progress=progress, overrides=overrides)
    check_released_name(name)
    if name in RELEASED:
        return load_released(name, cache_dir=cache_dir, overrides=overrides)
    return load_hub(name, overrides=overrides)


def tokenizer_and_context(name: str, *, cache_dir=None) -> tuple[Any, int] | None:
    """(tokenizer, context length) of a toy without training it; None for models that load without training."""
    entry = entry_for(name)
    return toy_tokenizer(entry, cache_dir=cache_dir) if entry.source == "toy" else None


def _resolve_recipe(name: str, recipe) -> SparseRecipe:
    if isinstance(recipe, SparseRecipe):
        return recipe
    base = asdict(default_sparse_recipe(name))
    if recipe is not None and not isinstance(recipe, dict):
        raise ValueError(f"recipe: expected a dict or SparseRecipe, got {type(recipe).__name__}")
    unknown = sorted(set(recipe or {}) - set(base))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown sparse recipe setting (known: {', '.join(sorted(base))})")
    return SparseRecipe.from_any({**base, **(recipe or {})})


def load_sparse(name: str, recipe=None, *, cache_dir=None, progress: bool = True, device: str = "auto",
                dense_overrides: dict | None = None, weights: bool = True) -> LoadedModel:
    """The sparse-attention post-trained copy of ``load(name, **dense_overrides)`` under ``recipe`` (a dict of
    :class:`SparseRecipe` fields layered over :func:`default_sparse_recipe`, or a full ``SparseRecipe``),
    trained on first use and cached. The returned model is sparsified with the recipe's gate bias (or its fixed mask
    policy, for a baseline recipe; the ``"dense"`` policy's compute-matched control stays dense); ``history``
    holds every training step (floor phase first, ``phase`` says which) and ``run`` the post-training run: its τ
    and the held-out numbers (CE, edges, task metrics such as exact match) of the dense, the gated-untrained and
    the sparse model. ``weights=False`` returns the run without its weights (``model`` is None): what a study
    that reads only numbers needs, and all that a run published as a record holds."""
    from transformers import AutoModelForCausalLM

    resolved = _resolve_recipe(name, recipe)
    entry = entry_for(name)
    dense_loaded = load(name, cache_dir=cache_dir, progress=progress, device="cpu", **(dense_overrides or {}))
    dense_dir = Path(dense_loaded.info["cache_dir"]) if "cache_dir" in dense_loaded.info else (
        model_cache_dir(cache_dir) / "hub" / config_hash({"name": name}))
    key = config_hash({"format": FORMAT_VERSION, "dense": str(dense_dir.name), "recipe": resolved.identity()})
    final = dense_dir / "sparse" / key
    trained_now = False
    with locked(final, lambda: is_built(final, weights)) as build:
        if build:
            train_data, heldout = entry.sparse_data(dense_loaded, resolved, cache_dir)
            run_dir = final.with_name(final.name + ".run")
            result = post_train(dense_loaded.model, train_data, heldout, resolved,
                                extra_metrics=entry.heldout_metrics, folder=RunFolder(run_dir, {"cache_key": key}),
                                desc=f"sparse {name}", progress=progress, device=device)
            info = {
                "name": name, "dense_cache_dir": str(dense_dir), "key": key, "recipe": asdict(resolved),
                "heldout_split": entry.heldout_split, "tau": result.tau, "tau_reference": result.tau_reference,
                "seed": resolved.seed, "trained_on": result.machine, "dataset": dense_loaded.info.get("dataset"),
                "dense_train_ce": result.dense_train_ce, "floor_ce": result.floor_ce, "best_step": result.best_step,
                "train_wall_time_s": result.wall_time_s, "metrics": result.metrics,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            to_dense(result.model)
            publish(final, run_dir, result.model, info, result.history, result.evals)
            trained_now = True
    info = verified_info(final, weights)
    model = from_cache(final, AutoModelForCausalLM.from_pretrained) if weights else None
    run = PostTrainResult.from_record(info, read_jsonl(final / "history.jsonl"), read_jsonl(final / "evals.jsonl"))
    if model is not None:
        if not run.is_control:
            sparsify(model, gate_bias=run.recipe.gate_bias,
                     policy=None if run.policy is None else MaskPolicy(**run.policy))
        model = to_device(model, device).eval()
    info.update(cache_dir=str(final), trained_now=trained_now,
                call={"fn": "load_sparse", "name": name, "recipe": asdict(resolved),
                      "dense_overrides": dict(dense_overrides or {})})
    return used(LoadedModel(name=name, model=model, tokenizer=dense_loaded.tokenizer, data=dense_loaded.data,
                            info=info, history=run.history, evals=run.evals, run=run))
