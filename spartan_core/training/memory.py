"""How much accelerator memory a post-training run needs per process, said before it starts, so that a 7B run
that cannot fit is changed (LoRA, sharding, activation checkpointing, a smaller micro-batch) before it is queued.

The estimate counts what the loop keeps: float32 weights (sharded over the processes with FSDP), float32 gradients
and two AdamW moments of the trainable parameters (sharded too), bf16 activations of one micro-batch, and the
logits with their float32 loss copy and gradient. Activations follow the usual per-layer count for a transformer
block, 34·s·b·h bytes for the projections and MLP, plus the gated attention's saved [b, heads, s, keys] tensors
(about 10 bytes per score: the float32 scores and probabilities, the mask and the gate's straight-through terms).
A call longer than the gate's chunk threshold keeps one query chunk of them at a time. With activation checkpointing
each layer keeps only its input (2·s·b·h bytes) and one layer is recomputed at a time. It is an estimate: ``make
gpu-check`` measures real peaks to compare it with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..mechanism.gate import CHUNK_ABOVE, CHUNK_ROWS

__all__ = ["MemoryEstimate", "estimate_memory", "estimate_from_config", "model_from_config", "GIB"]

GIB = 2**30
SCORE_BYTES = 10  # per [b, heads, s, keys] element kept for backward by the gated attention


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per process of each part, and the settings they were estimated for."""

    parameters: int
    trainable: int
    parts: dict
    processes: int
    sharded: bool
    micro_batch: int
    seq_len: int

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def fits(self, limit_gib: float) -> bool:
        return self.total <= limit_gib * GIB

    @property
    def sentence(self) -> str:
        layout = (f"sharded over {self.processes} processes" if self.sharded else
                  f"on each of {self.processes} processes" if self.processes > 1 else "on one device")
        parts = ", ".join(f"{name} {size / GIB:.3g}" for name, size in self.parts.items())
        trainable = "every weight trains" if self.trainable == self.parameters else f"{_count(self.trainable)} trainable"
        return (f"memory estimate: {_count(self.parameters)} parameters ({trainable}), micro-batch "
                f"{self.micro_batch} x {self.seq_len} tokens, {layout}: about {self.total / GIB:.3g} GiB per process "
                f"({parts} GiB)")


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"


def model_from_config(config) -> torch.nn.Module:
    """A causal LM of ``config`` on the meta device: its shapes without allocating its weights."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def estimate_from_config(config, *, lora_rank: int | None = None, lora_mlp: bool = False,
                         **settings) -> MemoryEstimate:
    """:func:`estimate_memory` of a model known only by its config (no weights allocated), with rank-``lora_rank``
    adapters when given; ``settings`` are estimate_memory's (seq_len, micro_batch, processes ...)."""
    import warnings

    from .lora import with_lora

    model = model_from_config(config)
    if lora_rank is not None:
        with warnings.catch_warnings():  # peft asks a meta-device model a deprecated transformers question
            warnings.simplefilter("ignore", FutureWarning)
            model = with_lora(model, lora_rank, lora_mlp)
    return estimate_memory(model, **settings)


def estimate_memory(model: torch.nn.Module, *, seq_len: int, micro_batch: int = 1, processes: int = 1,
                    sharded: bool = False, activation_checkpointing: bool = False) -> MemoryEstimate:
    """Per-process memory of post-training ``model`` (its trainable parameters as they are: wrap it with LoRA
    first to estimate a LoRA run; a meta-device model from :func:`model_from_config` works)."""
    for name, value in (("seq_len", seq_len), ("micro_batch", micro_batch), ("processes", processes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
    config = model.config
    hidden, layers, heads = config.hidden_size, config.num_hidden_layers, config.num_attention_heads
    vocab = model.get_output_embeddings().weight.shape[0]
    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    share = processes if sharded else 1
    tokens = micro_batch * seq_len
    queries = CHUNK_ROWS if seq_len > CHUNK_ABOVE else seq_len
    layer = 34 * tokens * hidden + SCORE_BYTES * micro_batch * heads * queries * seq_len
    activations = (layers * 2 * tokens * hidden + layer) if activation_checkpointing else layers * layer
    parts = {"weights": 4 * parameters // share, "gradients": 4 * trainable // share,
             "optimiser": 8 * trainable // share, "activations": activations, "logits": 10 * tokens * vocab}
    return MemoryEstimate(parameters, trainable, parts, processes, sharded, micro_batch, seq_len)
