"""spartan_core: gated sparse attention post-training for Hugging Face causal LMs.

Reproduction companion of "Sparse Attention Post-Training for Mechanistic Interpretability" (Draye et al.,
arXiv 2512.05865). The stable public names are re-exported here: the mechanism (``sparse_attention``,
``sparsify``, ``count_edges``), the objective (``GECO``, ``SparsityUnderCE``), the one loop (``train``) and the
paper's recipe (``post_train`` with a ``SparseRecipe``).
"""

from .mechanism.gate import GateStats, sparse_attention
from .mechanism.sparsify import dense, expected_fraction, sparsify
from .mechanism.token_edges import EdgeCounts, count_edges
from .objective.base import Objective
from .objective.geco import GECO
from .objective.sparsity import SparsityUnderCE
from .training import (PostTrainResult, SparseRecipe, TrainConfig, TrainingDiverged, TrainResult, evaluate,
                       post_train, train)

__version__ = "0.1.0"

__all__ = [
    "GateStats", "sparse_attention", "EdgeCounts", "count_edges", "GECO", "Objective", "SparsityUnderCE", "dense",
    "sparsify", "expected_fraction", "TrainConfig", "TrainResult", "TrainingDiverged", "evaluate", "train",
    "post_train", "SparseRecipe", "PostTrainResult",
]
