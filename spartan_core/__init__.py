"""spartan_core: gated sparse attention post-training for Hugging Face causal LMs.

Reproduction companion of "Sparse Attention Post-Training for Mechanistic Interpretability" (Draye et al.,
arXiv 2512.05865). The stable public names are re-exported here: the mechanism (``sparse_attention``,
``sparsify``, ``count_edges``), the objective (``GECO``, ``SparsityUnderCE``), the one loop (``train``) and the
paper's recipe (``post_train`` with a ``SparseRecipe``). They are imported on first use, so importing a small
part of the package (the companion imports ``spartan_core._util``) does not load torch and transformers.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "GateStats": "mechanism.gate", "sparse_attention": "mechanism.gate",
    "dense": "mechanism.sparsify", "expected_fraction": "mechanism.sparsify", "sparsify": "mechanism.sparsify",
    "EdgeCounts": "mechanism.token_edges", "count_edges": "mechanism.token_edges",
    "Objective": "objective.base", "GECO": "objective.geco", "SparsityUnderCE": "objective.sparsity",
    "TrainConfig": "training", "TrainResult": "training", "TrainingDiverged": "training", "evaluate": "training",
    "train": "training", "post_train": "training", "SparseRecipe": "training", "PostTrainResult": "training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'spartan_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
