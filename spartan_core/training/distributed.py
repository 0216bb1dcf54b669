"""Several processes, one run, on Hugging Face accelerate's data parallelism (DDP): the one training loop asks
:func:`processes` who it is, and the same loop runs under ``torchrun`` or ``accelerate launch``.

What the loop does with it: ``batch_size`` stays the global batch and ``grad_accum`` counts each process's
micro-batches, so process r takes micro-batches r·grad_accum ... (r+1)·grad_accum − 1 of the same rows a single
process would split into world·grad_accum micro-batches. The sampled gates of each micro-batch are drawn from
(seed, step, micro-batch index), so any layout of the same global batch draws the same masks; DDP averages the
gradients; the step's CE (GECO's input) and the objective's step sums (the expected kept fraction) are averaged
across processes; process 0 alone writes logs, checkpoints and results, and every process resumes from them.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch

__all__ = ["Processes", "processes", "launched"]


def launched() -> bool:
    """Whether ``torchrun`` or ``accelerate launch`` started this process (both set ``WORLD_SIZE``)."""
    return "WORLD_SIZE" in os.environ


class Processes:
    """This process's place in the run: index, count, and the few collectives the loop needs."""

    def __init__(self, engine: bool):
        self.accelerator = None
        if engine:
            if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true"):
                raise ValueError("fsdp: this loop runs data parallel (DDP) only; its checkpoints save whole "
                                 "weights, which FSDP's sharded parameters are not. Launch without --use_fsdp")
            from accelerate import Accelerator

            self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.index = self.accelerator.process_index if engine else 0
        self.count = self.accelerator.num_processes if engine else 1

    @property
    def engine(self) -> bool:
        """Launched as a distributed run (even of one process): masks are drawn per micro-batch."""
        return self.accelerator is not None

    @property
    def main(self) -> bool:
        return self.index == 0

    def device(self, requested: torch.device) -> torch.device:
        """Each process's own accelerator when launched; else what the caller resolved."""
        return self.accelerator.device if self.engine and requested.type != "cpu" else requested

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model the forward passes go through (DDP-wrapped when launched)."""
        return self.accelerator.prepare_model(model) if self.engine else model

    def no_sync(self, wrapped: torch.nn.Module, sync: bool):
        """Skip DDP's gradient all-reduce on every micro-batch but a step's last."""
        return contextlib.nullcontext() if sync or not self.engine else self.accelerator.no_sync(wrapped)

    def _reduce(self, value: float, op) -> float:
        if not self.engine or self.count == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.accelerator.device)
        torch.distributed.all_reduce(tensor, op=op)
        return float(tensor)

    def mean(self, value: float) -> float:
        return self._reduce(value, torch.distributed.ReduceOp.SUM) / self.count

    def sum(self, value: float) -> float:
        return self._reduce(value, torch.distributed.ReduceOp.SUM)

    def max(self, value: float) -> float:
        return self._reduce(value, torch.distributed.ReduceOp.MAX)

    def barrier(self) -> None:
        if self.engine:
            self.accelerator.wait_for_everyone()


@functools.cache
def processes() -> Processes:
    """The processes of this run (built once per process: launching initialises the process group)."""
    return Processes(launched())
