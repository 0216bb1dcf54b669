"""Training: the one loop (``loop``), its batches, evaluation and run directories, and the paper's post-training
recipe (``posttrain``)."""

from .batches import iter_batches, validate_blocks
from .checkpoint import CheckpointUnreadable, RunBusy, RunFolder, RunMismatch, load_checkpoint_weights
from .config import (TrainConfig, TrainingDiverged, TrainResult, autocast_for, describe_machine, resolve_device,
                     torch_threads)
from .evaluate import evaluate
from .loop import train
from .posttrain import PostTrainResult, SparseRecipe, post_train

__all__ = [
    "TrainConfig", "TrainResult", "TrainingDiverged", "RunFolder", "RunMismatch", "RunBusy", "CheckpointUnreadable", "train",
    "evaluate", "post_train", "SparseRecipe", "PostTrainResult", "iter_batches", "validate_blocks",
    "load_checkpoint_weights", "resolve_device", "autocast_for", "describe_machine", "torch_threads",
]
