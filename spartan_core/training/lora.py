"""LoRA adapters through peft for post-training models too large to fine-tune in full (the paper's 7B runs).

The gate has no parameters of its own: it reads q·k, so adapters on the query and key projections are what let
it learn to close edges. Adapters go on the linear layers of every attention module (and of every MLP when asked),
found by walking the model, so any decoder that :func:`~spartan_core.sparsify` accepts works. After training,
:func:`merge_lora` folds them into the weights: the result is a plain transformers model again.
"""

from __future__ import annotations

import torch
from torch import nn

from ..mechanism.sparsify import attention_modules

__all__ = ["with_lora", "merge_lora", "lora_targets"]


def _projections(module: nn.Module, prefix: str) -> list[str]:
    from transformers.pytorch_utils import Conv1D

    return [f"{prefix}.{name}" for name, child in module.named_modules()
            if name and isinstance(child, (nn.Linear, Conv1D))]


def lora_targets(model: nn.Module, mlp: bool = False) -> list[str]:
    """Full names of the projections that get adapters: every attention module's, and the MLPs' if ``mlp``."""
    names = {module: name for name, module in model.named_modules()}
    targets = [t for module in attention_modules(model) for t in _projections(module, names[module])]
    if mlp:
        targets += [t for module, name in names.items() if name.rsplit(".", 1)[-1] == "mlp"
                    for t in _projections(module, name)]
    return targets


def with_lora(model: nn.Module, rank: int, mlp: bool = False, alpha: float | None = None) -> nn.Module:
    """``model`` wrapped by peft with rank-``rank`` adapters (scale alpha / rank, alpha = 2 x rank by default);
    only the adapters train. A sparsified model stays sparsified (the gate reads the adapted q and k)."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"lora_rank: must be an integer >= 1, got {rank!r}")
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    targets = lora_targets(model, mlp)
    fan_in_fan_out = any(isinstance(model.get_submodule(t), Conv1D) for t in targets)  # GPT-2 stores [in, out]
    config = LoraConfig(r=rank, lora_alpha=2 * rank if alpha is None else alpha, target_modules=targets,
                        lora_dropout=0.0, bias="none", fan_in_fan_out=fan_in_fan_out)
    return get_peft_model(model, config)


def merge_lora(model: nn.Module) -> nn.Module:
    """The plain transformers model with the adapters folded into its weights (a model without adapters as is)."""
    if not hasattr(model, "merge_and_unload"):
        return model
    with torch.no_grad():
        return model.merge_and_unload()
