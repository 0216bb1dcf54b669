"""The paper's objective: minimise the expected fraction of kept edges subject to CE <= tau, as
``CE + beta x expected fraction`` with beta moved by GECO after every step."""

from __future__ import annotations

import torch

from ..mechanism.sparsify import expected_fraction, sparse_state
from .base import Objective
from .geco import GECO

__all__ = ["SparsityUnderCE"]


class SparsityUnderCE(Objective):
    """GECO-constrained sparsity. beta is read once per optimiser step (every micro-batch uses the same), and
    the kept checkpoint is the evaluation with the fewest kept edges whose deterministic-mask CE met tau."""

    def __init__(self, geco: GECO):
        self.geco = geco
        self._beta = geco.beta
        self._fraction_sum = 0.0

    def check(self, model: torch.nn.Module) -> None:
        if sparse_state(model) is None:
            raise ValueError("geco: GECO post-training needs a sparsified model (call spartan_core.sparsify(model))")

    def begin_step(self) -> None:
        self._beta = self.geco.beta
        self._fraction_sum = 0.0

    def loss(self, model: torch.nn.Module, ce: torch.Tensor) -> torch.Tensor:
        fraction = expected_fraction(model)
        self._fraction_sum += float(fraction.detach())
        return ce + self._beta * fraction

    def reduce(self, mean) -> None:
        self._fraction_sum = mean(self._fraction_sum)

    def end_step(self, ce: float, micro_batches: int) -> dict:
        self.geco.update(ce)
        return {"expected_fraction": self._fraction_sum / micro_batches, "beta_used": self._beta,
                **self.geco.log_fields()}

    def selection_score(self, metrics) -> float | None:
        if metrics.edges is None or not metrics.ce <= self.geco.tau:
            return None
        return metrics.edges.kept_fraction

    def progress(self, record: dict) -> dict:
        return {"beta": f"{self.geco.beta:.2e}", "frac": f"{record['expected_fraction']:.4f}"}

    def manifest(self) -> dict:
        return {k: v for k, v in self.geco.state_dict().items() if k not in ("ce_ema", "steps", "slack")}

    def state_dict(self) -> dict:
        return {"geco": self.geco.state_dict()}

    def load_state_dict(self, state: dict | None) -> None:
        if not state or "geco" not in state:
            raise ValueError("geco: the checkpoint to resume was written without GECO")
        self.geco.load_state_dict(state["geco"])
