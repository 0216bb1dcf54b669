"""What loading a model returns, and the record of which models this process used (results files list them)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch

from ..training.posttrain import PostTrainResult

__all__ = ["LoadedModel", "Pretraining", "to_device", "used", "used_models"]


@dataclass(frozen=True)
class Pretraining:
    """A toy's pretraining as its card reports it, measured once when it was trained: held-out CE on the whole
    held-out split, and where the registry entry measures them a training-CE sample, the bigram baseline's CE on
    the same held-out text (language models) and exact match (the addition toy)."""

    heldout_ce: float
    wall_time_s: float
    train_ce_sample: float | None = None
    bigram_ce: float | None = None
    exact_match: dict[str, float] | None = None
    tokens: int | None = None  # training tokens seen: steps x batch x block length (None: not recorded)

    @classmethod
    def from_info(cls, info: dict) -> "Pretraining":
        metrics, recipe = info["metrics"], info.get("recipe") or {}
        pretrain, data, architecture = (recipe.get(k) or {} for k in ("pretrain", "data", "architecture"))
        block = data.get("block_size", architecture.get("n_positions"))
        tokens = pretrain["steps"] * pretrain["batch_size"] * block if block and "steps" in pretrain else None
        return cls(heldout_ce=metrics["heldout_ce"], wall_time_s=info["train_wall_time_s"],
                   train_ce_sample=metrics.get("train_ce_sample"),
                   bigram_ce=(metrics.get("bigram") or {}).get("ce"), exact_match=metrics.get("exact_match"),
                   tokens=tokens)


@dataclass
class LoadedModel:
    """A model with what belongs to it. ``data`` maps split names to token-block dicts (addition: ``train``,
    ``test``; Shakespeare: ``train``, ``validation``; hub models and SmolLM2: empty). ``history``/``evals`` are
    the per-step training records and evaluations of the run that made the model (post-training for sparse
    models, pretraining for toys; empty for downloaded models). ``run`` is the post-training run of a sparse
    copy (its recipe, τ and held-out numbers before and after; None for every other model), ``pretraining`` what
    a toy's pretraining measured (None for models not pretrained here); ``info`` says how the weights were made
    and where they live (what :attr:`provenance` reports)."""

    name: str
    model: Any
    tokenizer: Any
    data: dict[str, dict[str, torch.Tensor]]
    info: dict
    history: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    run: PostTrainResult | None = None
    pretraining: Pretraining | None = None

    @property
    def provenance(self) -> dict:
        """What identifies these weights: their SHA-256 (the cache's checksum; None for hub models, which are
        not hashed), the training seed, the threads, device and torch version they were trained with (None for
        models not trained here), the hash of the corpus they learnt from where the data has one (python-lm), and
        the zoo call that makes them again (``call``: what ``make retrain`` replays; None for models not trained
        here), and whether the weights were read or only the run's record (``weights_read``)."""
        info = self.info
        trained = info.get("trained_on") or {}
        return {
            "model": self.name,
            "kind": "sparse" if "recipe" in info and "tau" in info else "dense",
            "weights_sha256": weights_digest(info.get("weights_sha256")),
            "seed": info.get("seed"),
            "threads": trained.get("threads"),
            "device": trained.get("device"),
            "device_name": trained.get("device_name"),
            "torch": trained.get("torch"),
            "train_wall_time_s": info.get("train_wall_time_s"),
            "source": info.get("source", "post-trained here" if "tau" in info else None),
            "cache_key": info.get("key"),
            "corpus_sha256": ((info.get("dataset") or {}).get("corpus") or {}).get("sha256"),
            "call": info.get("call"),
            "weights_read": self.model is not None,
        }


def weights_digest(checksums: dict[str, str] | None) -> str | None:
    """One SHA-256 for a model's weight files: the file's own when there is one, else a hash of name=sha lines."""
    if not checksums:
        return None
    if len(checksums) == 1:
        return next(iter(checksums.values()))
    lines = "".join(f"{name}={digest}\n" for name, digest in sorted(checksums.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


_USED: list[dict] = []


def used(loaded: LoadedModel) -> LoadedModel:
    """Note ``loaded`` as used by this process (once per set of weights) and return it."""
    record = loaded.provenance
    seen = next((seen for seen in _USED if _same_weights(record, seen)), None)
    if seen is None:
        _USED.append(record)
    else:
        seen["weights_read"] = seen["weights_read"] or record["weights_read"]
    return loaded


def _same_weights(record: dict, seen: dict) -> bool:
    """Two loads of one cache entry (e.g. ``seed=0`` given or left at its default) are one model."""
    if record["weights_sha256"] is None:
        return record == seen
    return (record["weights_sha256"], record["cache_key"]) == (seen["weights_sha256"], seen["cache_key"])


def used_models(since: int = 0) -> list[dict]:
    """Provenance of every model this process loaded through the zoo, in order (from index ``since``)."""
    return [dict(r) for r in _USED[since:]]


def to_device(model, device: str):
    from ..training.config import resolve_device

    return model.to(resolve_device(device))
