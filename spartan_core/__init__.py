"""spartan_core: gated sparse attention post-training for Hugging Face causal LMs.

Reproduction companion of "Sparse Attention Post-Training for Mechanistic Interpretability" (Draye et al.,
arXiv 2512.05865). The stable public names are re-exported here.
"""

from .attention import GateStats, sparse_attention
from .edges import EdgeCounts, count_edges
from .geco import GECO
from .hf import dense, expected_fraction, sparsify
from .train import TrainConfig, TrainResult, TrainingDiverged, evaluate, train

__version__ = "0.1.0"

__all__ = [
    "GateStats", "sparse_attention", "EdgeCounts", "count_edges", "GECO", "dense", "sparsify",
    "expected_fraction", "TrainConfig", "TrainResult", "TrainingDiverged", "evaluate", "train",
]
