"""What several chapters' studies share: a dense model with its sparse copy (or why it is unavailable here), a
held-out sample of its data, and the display names of heads and tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .. import zoo
from ..training.evaluate import HeldOut
from ..training.posttrain import DENSE_CONTROL
from ..zoo.released import RELEASED, RELEASED_DENSE

__all__ = ["ModelPair", "Unavailable", "load_pair", "load_run", "heldout_blocks", "pretrain_overrides", "head_name",
           "token_labels"]


@dataclass(frozen=True)
class ModelPair:
    """A dense model of the zoo and its sparse post-trained copy (both ``zoo.LoadedModel``), with the held-out
    numbers of each on the split the sparse copy was measured on (``before``: dense, ``after``: sparse) and, where
    asked for, of the compute-matched control (the dense model trained as long as the sparse copy, gate off)."""

    name: str
    dense: Any
    sparse: Any
    before: HeldOut
    after: HeldOut
    control: HeldOut | None = None


@dataclass(frozen=True)
class Unavailable:
    """A model that cannot be loaded on this machine (hub offline, weights missing): reported, never measured."""

    model: str
    reason: str

    @property
    def sentence(self) -> str:
        return f"{self.model} is pending, not measured here: {self.reason}."


def pretrain_overrides(name: str, dense_steps: int | None = None, seed: int = 0, threads: int | None = None) -> dict:
    """Pretraining settings of a toy trained here: ``seed`` (its training seed), ``threads`` and ``dense_steps``
    (None: the registry's default). Models not trained here take none of them."""
    if dense_steps is not None and dense_steps < 1:
        raise ValueError(f"dense_steps: must be >= 1 or None (the registry's default), got {dense_steps!r}")
    if zoo.entry_for(name).source != "toy":
        return {}
    return {"seed": seed, **({"steps": dense_steps} if dense_steps is not None else {}),
            **({"threads": threads} if threads is not None else {})}


def load_run(name: str, recipe: dict, seed: int, dense_steps: int | None = None, dense_seed: int | None = None):
    """``name``'s sparse copy under ``recipe`` for training seed ``seed``, loaded for its run record (no weights): the
    post-training and a toy's pretraining both use ``seed`` unless ``dense_seed`` names the dense model's own."""
    overrides = pretrain_overrides(name, dense_steps, seed if dense_seed is None else dense_seed)
    return zoo.load_sparse(name, {**recipe, "seed": seed}, dense_overrides=overrides, progress=False, weights=False)


def load_pair(name: str, *, seed: int = 0, threads: int | None = None, dense_steps: int | None = None,
              sparse_steps: int | None = None, floor_steps: int | None = None, recipe: dict | None = None,
              control: bool = False) -> ModelPair | Unavailable:
    """Dense and sparse copies of ``name`` for training seed ``seed`` (a toy's pretraining and the
    post-training both use it); steps and floor steps None keep the registry's recipe, ``recipe`` sets other
    post-training fields. ``threads`` retrains both at another CPU thread count (None: the recipe's). ``control``
    also loads the held-out numbers of the compute-matched control (the recipe with the ``"dense"`` policy)."""
    if sparse_steps is not None and sparse_steps < 1:
        raise ValueError(f"sparse_steps: must be >= 1 or None (the recipe's default), got {sparse_steps!r}")
    if name in RELEASED:
        return _released_pair(name, seed)
    dense_overrides = pretrain_overrides(name, dense_steps, seed, threads)
    recipe = {**(recipe or {}), "seed": seed, **({"steps": sparse_steps} if sparse_steps is not None else {}),
              **({"floor_steps": floor_steps} if floor_steps is not None else {}),
              **({"threads": threads} if threads is not None else {})}
    try:
        sparse = zoo.load_sparse(name, recipe, dense_overrides=dense_overrides, progress=False)
        dense = zoo.load(name, progress=False, **dense_overrides)
        matched = zoo.load_sparse(name, {**recipe, "policy": DENSE_CONTROL}, dense_overrides=dense_overrides,
                                  progress=False, weights=False) if control else None
    except (zoo.HubUnavailableError, FileNotFoundError) as error:
        return Unavailable(name, str(error).splitlines()[0])
    return ModelPair(name, dense, sparse, sparse.run.dense, sparse.run.after, matched.run.after if control else None)


RELEASED_HELDOUT_BLOCKS = 64  # held-out blocks (128 tokens or the context) a released pair is measured on


def _released_pair(name: str, seed: int) -> ModelPair | Unavailable:
    """One of the authors' released sparse models beside the dense model it was post-trained from: no training
    here, its gate bias from the release, held-out CE and kept edges of both measured on the held-out blocks of
    :func:`heldout_blocks`. The authors released one checkpoint, so only training seed 0 exists."""
    from ..data.files import context_length
    from ..mechanism.sparsify import sparsify
    from ..training.evaluate import measure_heldout

    if seed != 0:
        return Unavailable(name, f"the authors released one checkpoint, so training seed {seed} does not exist "
                                 "(run with -p train_seeds '[0]')")
    try:
        sparse = zoo.load(name, progress=False)
        dense = zoo.load(RELEASED_DENSE[name], progress=False)
    except (zoo.HubUnavailableError, FileNotFoundError) as error:
        return Unavailable(name, str(error).splitlines()[0])
    sparsify(sparse.model, gate_bias=sparse.info["gate_bias"])
    heldout_name, heldout = heldout_blocks(dense, RELEASED_HELDOUT_BLOCKS, min(128, context_length(dense.model)))
    batch = 8
    sparse.info.update(heldout_split=heldout_name, dense_model=dense.name)
    return ModelPair(name, dense, sparse, measure_heldout(dense.model, heldout, batch),
                     measure_heldout(sparse.model, heldout, batch))


def heldout_blocks(loaded, max_blocks: int, block_size: int, cache_dir=None, spread: bool = True) -> tuple[str, dict]:
    """(name, token-block data) of at most ``max_blocks`` held-out rows of a loaded model: from its own held-out
    split when it has one (the registry entry names it), else blocks of ``block_size`` tokens of the Shakespeare validation
    plays in the model's own tokenizer. Rows are evenly spread over the split (``spread``) or the first ones."""
    name = loaded.info.get("heldout_split") if loaded.info.get("heldout_split") in loaded.data else None
    if name is not None:
        data = {k: v for k, v in loaded.data[name].items() if k in ("input_ids", "labels", "attention_mask")}
    else:
        from ..data.text import shakespeare_data

        data = shakespeare_data(loaded.tokenizer, block_size=block_size, cache_dir=cache_dir)["validation"]
    total = len(data["input_ids"])
    count = min(max_blocks, total)
    rows = torch.linspace(0, total - 1, count).round().long() if spread else torch.arange(count)
    data = {k: v[rows] for k, v in data.items()}
    if name is None:
        name = f"Shakespeare validation plays, {count} blocks of {block_size}"
    elif count < total:
        name = f"{name} ({count} of {total} rows)"
    return name, data


def head_name(layer: int, head: int) -> str:
    """How the book writes a head, as the circuits' component graph names it: ``a1.h2``; made only where a head
    is displayed."""
    return f"a{layer}.h{head}"


def token_labels(tokenizer, ids) -> list[str]:
    """One printable label per token id (each decoded alone; newlines shown as ``\\n``), for map axes."""
    ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    return [tokenizer.decode([int(i)]).replace("\n", "\\n") or f"<{int(i)}>" for i in ids]
