"""Several processes, one run: data parallel on Hugging Face accelerate (DDP), or with the weights sharded over the
processes (FSDP, torch's ``fully_shard``). The one training loop asks :func:`processes` who it is, and the same
loop runs under ``torchrun`` or ``accelerate launch`` (``--use_fsdp`` there, or ``TrainConfig(fsdp=True)``, shards).

What the loop does with it: ``batch_size`` stays the global batch and ``grad_accum`` counts each process's
micro-batches, so process r takes micro-batches r·grad_accum ... (r+1)·grad_accum − 1 of the same rows a single
process would split into world·grad_accum micro-batches. The sampled gates of each micro-batch are drawn from
(seed, step, micro-batch index), so any layout of the same global batch draws the same masks; DDP averages the
gradients; the step's CE (GECO's input) and the objective's step sums (the expected kept fraction) are averaged
across processes; process 0 alone writes logs, checkpoints and results, and every process resumes from them.

The loop asks :meth:`Processes.place` once for a :class:`Placement` and makes the same few calls of it whatever
the layout (wrap the model, the optimizer checkpoints hold, take shards after a resume, gather whole weights,
agree on a checkpoint, finish), so it holds no sharding branch of its own.

Sharded, the loop trains a sharded copy (each decoder layer and the root are ``fully_shard`` units) while the model
it was given stays whole: checkpoints, the kept best weights and the returned model are whole weights gathered
into it, so a sharded run writes the same weight files as an unsharded one. Its optimizer state is kept by
parameter name, so a sharded run directory resumes only sharded (its manifest says ``fsdp``; another layout is
refused in one line).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os

import torch
from torch import nn

__all__ = ["Processes", "processes", "launched", "fsdp_requested", "Placement"]

FSDP_ENV = "ACCELERATE_USE_FSDP"  # what ``accelerate launch --use_fsdp`` sets


def launched() -> bool:
    """Whether ``torchrun`` or ``accelerate launch`` started this process (both set ``WORLD_SIZE``)."""
    return "WORLD_SIZE" in os.environ


def fsdp_requested(flag: bool = False) -> bool:
    """Whether this run shards its weights: ``flag`` (``TrainConfig.fsdp``) or ``accelerate launch --use_fsdp``."""
    return flag or os.environ.get(FSDP_ENV, "false").lower() in ("1", "true")


class Processes:
    """This process's place in the run: index, count, and the few collectives the loop needs."""

    def __init__(self, engine: bool):
        self.accelerator = None
        if engine:
            from accelerate import Accelerator

            requested = os.environ.pop(FSDP_ENV, None)  # the loop shards itself; accelerate must not wrap again
            try:
                self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
            finally:
                if requested is not None:
                    os.environ[FSDP_ENV] = requested
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

    def sharding(self, fsdp: bool) -> bool:
        """Whether this run shards its weights; refuses sharding without several processes in one line."""
        if not fsdp_requested(fsdp):
            return False
        if self.count < 2:
            raise ValueError("fsdp: shards the weights over several processes; launch with torchrun "
                             "--nproc_per_node N or accelerate launch --num_processes N (N >= 2)")
        return True

    def place(self, model: nn.Module, device: torch.device, fsdp: bool, grad_accum) -> Placement:
        """How ``model`` trains in this run: whole (one process or DDP) or sharded (FSDP, which refuses
        ``grad_accum="auto"``: measuring it takes the whole model on one device)."""
        if not self.sharding(fsdp):
            return Placement(self, model, device)
        if grad_accum == "auto":
            raise ValueError("grad_accum: 'auto' measures the whole model on one device; a sharded (fsdp) run needs "
                             "a number")
        return ShardedPlacement(self, model, device)

    def no_sync(self, wrapped: nn.Module, sync: bool):
        """Skip the gradient all-reduce (DDP) or reduce-scatter (FSDP) on every micro-batch but a step's last."""
        if sync or not self.engine:
            return contextlib.nullcontext()
        if hasattr(wrapped, "set_requires_gradient_sync"):
            return _no_gradient_sync(wrapped)
        return self.accelerator.no_sync(wrapped)

    @staticmethod
    def whole(value: torch.Tensor) -> torch.Tensor:
        """A plain tensor of a value that may be a DTensor (the gradient norm of a sharded model)."""
        return value.full_tensor() if hasattr(value, "full_tensor") else value

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


class Placement:
    """Where the model trains, as the loop sees it, for one process or data parallel (DDP): every process trains
    the model it was given, so its weights are always whole. :class:`ShardedPlacement` answers the same calls for
    FSDP, so the loop makes them whatever the layout and holds no branch of its own for it."""

    def __init__(self, ranks: Processes, model: nn.Module, device: torch.device):
        self.ranks, self.model, self.device = ranks, model, device
        self.trained = self.wrapped = model  # whose parameters train; what the forward passes go through
        model.to(device)

    def wrap(self) -> None:
        """Set up ``trained`` and ``wrapped``: DDP's wrapper when launched. Called after any forward pass of
        ``model`` alone (measuring ``grad_accum``), which DDP's gradient hooks would disturb."""
        if self.ranks.engine:
            self.wrapped = self.ranks.accelerator.prepare_model(self.model)

    def checkpointed(self, optimizer: torch.optim.Optimizer):
        """What checkpoints save and load as ``optimizer``."""
        return optimizer

    def resumed(self) -> None:
        """Called once every process has read a checkpoint into ``model`` and the optimizer."""

    def gather(self, everywhere: bool = True) -> None:
        """Whole weights of ``trained`` in ``model``: already there."""

    def checkpoint_due(self, due: bool) -> bool:
        """Whether this step saves a checkpoint (``due``: process 0's answer), with what it saves gathered."""
        return due

    def finish(self) -> None:
        """Every process has trained its last step; ``model`` is on the device (whole after :meth:`gather`)."""
        self.ranks.barrier()


class ShardedPlacement(Placement):
    """FSDP: a sharded copy trains on the device (each decoder layer and the root are ``fully_shard`` units) while
    ``model`` stays whole where it is; whole weights and optimizer state are gathered into it for checkpoints, the
    kept best and the result, so a sharded run writes the same files as a whole one."""

    def __init__(self, ranks: Processes, model: nn.Module, device: torch.device):
        self.ranks, self.model, self.device = ranks, model, device
        self.optimizer: GatheredOptimizer | None = None

    def wrap(self) -> None:
        self.trained = self.wrapped = _fully_shard(copy.deepcopy(self.model).to(self.device), self.device)

    def checkpointed(self, optimizer: torch.optim.Optimizer) -> GatheredOptimizer:
        self.optimizer = GatheredOptimizer(self.trained, optimizer)
        return self.optimizer

    def resumed(self) -> None:
        """Each process takes its shards of the whole weights and optimizer state it has read (collectives)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(self.trained, self.model.state_dict(), options=StateDictOptions(full_state_dict=True))
        self.optimizer.apply()

    def gather(self, everywhere: bool = True) -> None:
        """Whole weights of ``trained`` loaded into ``model`` on every process (on process 0 alone unless
        ``everywhere``). A collective: every process calls it at the same point."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.trained, options=StateDictOptions(full_state_dict=True,
                                                                            cpu_offload=not everywhere))
        if state:
            self.model.load_state_dict(state)

    def checkpoint_due(self, due: bool) -> bool:
        """Gathering is collective, so the processes' clocks must agree: every process gathers when any is due."""
        if not self.ranks.max(float(due)):
            return due
        self.gather(everywhere=False)
        self.optimizer.gather()
        return True

    def finish(self) -> None:
        self.ranks.barrier()
        self.model.to(self.device)


class GatheredOptimizer:
    """The optimizer of a sharded model as checkpoints see it: its whole state keyed by parameter name.
    ``gather`` (a collective) fills ``state_dict``; ``load_state_dict`` keeps a read state until ``apply`` (a
    collective) shards it, so that every process applies it at the same point of the loop."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer
        self.gathered: dict = {}
        self.pending: dict | None = None

    def gather(self) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        self.gathered = get_optimizer_state_dict(self.model, self.optimizer,
                                                 options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def state_dict(self) -> dict:
        return self.gathered

    def load_state_dict(self, state: dict) -> None:
        self.pending = state

    def apply(self) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        if self.pending is not None:
            set_optimizer_state_dict(self.model, self.optimizer, optim_state_dict=self.pending,
                                     options=StateDictOptions(full_state_dict=True))
            self.pending = None


def _fully_shard(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` sharded in place: every decoder layer (a list element holding an attention module) is one unit
    whose weights are gathered for its forward and backward only, and the root holds the rest (embeddings, head)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from ..mechanism.sparsify import attention_modules

    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    attention = {id(module) for module in attention_modules(model)}
    layers = [layer for block in model.modules() if isinstance(block, nn.ModuleList) for layer in block
              if any(id(module) in attention for module in layer.modules())]
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


@contextlib.contextmanager
def _no_gradient_sync(sharded):
    sharded.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        sharded.set_requires_gradient_sync(True)


@functools.cache
def processes() -> Processes:
    """The processes of this run (built once per process: launching initialises the process group)."""
    return Processes(launched())
