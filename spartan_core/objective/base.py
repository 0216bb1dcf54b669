"""What a training step minimises, stated apart from the loop (as cooper keeps the multiplier apart from the
model): the loop asks the objective for each micro-batch's loss, tells it when a step is done, and asks it which
evaluation is the best checkpoint. The loop itself knows no GECO."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["Objective"]


class Objective:
    """Plain cross-entropy: dense pretraining. Subclasses add a constraint (see :class:`SparsityUnderCE`)."""

    def check(self, model: torch.nn.Module) -> None:
        """Refuse a model the objective cannot train (raise ``ValueError`` naming the problem)."""

    def begin_step(self) -> None:
        """A new optimiser step starts (its micro-batches follow)."""

    def loss(self, model: torch.nn.Module, ce: torch.Tensor) -> torch.Tensor:
        """The loss of one micro-batch whose mean CE is ``ce`` (the model has just run its forward pass)."""
        return ce

    def reduce(self, mean: Callable[[float], float]) -> None:
        """Before ``end_step`` of a distributed run: average this process's step sums across processes."""

    def end_step(self, ce: float, micro_batches: int) -> dict:
        """The step is applied; ``ce`` is its mean CE. Returns fields for the step's log record."""
        return {}

    def selection_score(self, metrics) -> float | None:
        """Lower is better, from an :class:`~spartan_core.training.evaluate.Evaluation`; None: this evaluation
        may not become the kept checkpoint."""
        return None

    def progress(self, record: dict) -> dict:
        """Extra fields for the progress bar."""
        return {}

    def manifest(self) -> dict | None:
        """The starting settings that make a run this run (a resumed run must have the same)."""
        return None

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, state: dict | None) -> None:
        if state is not None:
            raise ValueError("objective: the checkpoint to resume was written by another objective")
