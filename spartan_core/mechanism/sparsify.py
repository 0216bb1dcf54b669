"""Plug gated sparse attention into Hugging Face causal LMs without forking their modeling files.

transformers routes attention through a registry: we register the function under the name ``spartan`` with
``AttentionInterface`` and a mask builder under the same name with ``AttentionMaskInterface`` (without the latter
the function silently receives no mask). We take the boolean SDPA mask builder: True marks an allowed edge, and
it passes ``None`` for plain causal attention without padding, which saves building and converting a float mask. ``sparsify`` switches a model to it; ``dense`` switches back.

Per-model settings (gate bias, whether to sample) live in a :class:`SparseState` shared by the model's
attention modules; every forward pass records one :class:`~spartan_core.mechanism.gate.GateStats` per layer there,
which the regulariser (:func:`expected_fraction`) and the edge counter read afterwards.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .gate import (AttentionLayer, AttentionPath, GateStats, causal_allowed, compile_enabled, gated_attention,
                   query_rows_per_chunk)

ATTN_NAME = "spartan"

__all__ = [
    "ATTN_NAME",
    "SparseState",
    "sparsify",
    "dense",
    "is_sparse",
    "sparse_state",
    "attention_modules",
    "layer_stats",
    "expected_fraction",
]


@dataclass
class SparseState:
    """Settings shared by the attention modules of one sparsified model, and the stats of its last forward."""

    gate_bias: float = 0.0
    sample: bool | None = None  # None: sample in train mode, threshold in eval mode
    policy: object = None  # a fixed MaskPolicy in place of the gate (a baseline); None: the learned gate
    record: bool = True
    compile: bool | None = None  # None: SPARTAN_COMPILE decides (see gate.compile_enabled)
    query_chunk: int | None = None  # None: chunk long training calls automatically (see gate.query_rows_per_chunk)
    need_weights: bool = False  # set per forward pass: the caller asked for output_attentions
    compiled: bool = False  # set per forward pass: ``compile`` resolved for the model's device
    stats: dict[int, GateStats] = field(default_factory=dict)
    previous_impl: str = "eager"
    hook: object = None


def _allowed_from_hf_mask(mask: torch.Tensor | None, batch: int, q_len: int, k_len: int, device) -> torch.Tensor:
    """Boolean [B, 1, Tq, Tk] allowed edges from the 4D mask transformers passes (float 0/-inf or bool).

    A query is real when its own position is an allowed key: padding queries are then excluded from counts even
    though transformers lets them attend to earlier real tokens.
    """
    if mask is None:
        return causal_allowed(batch, q_len, k_len, None, device)
    mask = mask[:, :, :, :k_len]
    allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
    offset = k_len - q_len
    idx = torch.arange(q_len, device=allowed.device)
    diagonal = allowed[:, :, idx, idx + offset]  # [B, 1|H, Tq]
    return (allowed & diagonal[..., None]).expand(batch, allowed.shape[1], q_len, k_len)


def spartan_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
):
    """The function transformers calls in place of eager attention (same signature and return layout)."""
    state: SparseState | None = getattr(module, "_spartan_state", None)
    if state is None:
        raise RuntimeError("attention module was not prepared by spartan_core.sparsify(model)")
    sample = module.training if state.sample is None else state.sample
    allowed = _allowed_from_hf_mask(attention_mask, query.shape[0], query.shape[2], key.shape[2], query.device)
    layer = AttentionLayer(scale=scaling, dropout=dropout if module.training else 0.0, policy=state.policy,
                           index=module._spartan_layer)
    path = AttentionPath(compiled=state.compiled, query_chunk=state.query_chunk, need_weights=state.need_weights)
    out, weights, stats = gated_attention(query, key, value, allowed, gate_bias=state.gate_bias, sample=sample,
                                          compute_stats=state.record, layer=layer, path=path)
    if stats is not None:
        state.stats[module._spartan_layer] = stats
    return out.transpose(1, 2).contiguous(), weights


AttentionInterface.register(ATTN_NAME, spartan_attention_forward)
AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """Self-attention modules of a decoder, in layer order (those transformers gives a ``layer_idx``)."""
    found = [
        m for m in model.modules()
        if type(m).__name__.endswith("Attention") and getattr(m, "layer_idx", None) is not None
    ]
    if not found:
        raise ValueError(f"{type(model).__name__}: no attention modules with a layer_idx found")
    return sorted(found, key=lambda m: m.layer_idx)


def sparse_state(model: nn.Module) -> SparseState | None:
    return getattr(model, "_spartan_state", None)


def is_sparse(model: nn.Module) -> bool:
    return sparse_state(model) is not None


def _start_forward(model, args, kwargs):
    """Before each forward pass: drop the last pass's stats, note whether attention weights are wanted (only
    then must the gate materialise them; otherwise evaluation may take the fused path), and resolve the compile
    switch once for the pass rather than once per layer."""
    state = model._spartan_state
    state.stats.clear()
    wanted = kwargs.get("output_attentions")
    state.need_weights = bool(model.config.output_attentions if wanted is None else wanted)
    state.compiled = compile_enabled(model.device, state.compile)


def sparsify(model: nn.Module, gate_bias: float = 0.0, sample: bool | None = None, policy=None, *,
             compile: bool | None = None, query_chunk: int | None = None) -> nn.Module:
    """Switch ``model`` (in place) to gated sparse attention and return it.

    ``gate_bias`` b is added to every gate logit: b > 0 opens gates at the start of post-training, and
    ``float('inf')`` keeps every edge (the model then computes its ordinary attention). ``sample`` overrides
    the default of sampling masks in train mode and thresholding in eval mode. ``policy`` (a
    :class:`~spartan_core.mechanism.policies.MaskPolicy`) replaces the gate by a fixed rule: a baseline.
    ``compile`` runs the gate through torch.compile (None: ``SPARTAN_COMPILE``, by default on CUDA only);
    ``query_chunk`` sets the query rows per chunk of a training call (None: automatic for long calls, 0: never).
    """
    if isinstance(gate_bias, bool) or not isinstance(gate_bias, (int, float)) or math.isnan(gate_bias):
        raise ValueError(f"gate_bias: must be a number (inf keeps every edge), got {gate_bias!r}")
    if not hasattr(model, "set_attn_implementation"):
        raise TypeError(f"sparsify expects a transformers PreTrainedModel, got {type(model).__name__}")
    state = sparse_state(model)
    if state is None:
        state = SparseState(previous_impl=model.config._attn_implementation or "eager")
        model.set_attn_implementation(ATTN_NAME)
        state.hook = model.register_forward_pre_hook(_start_forward, with_kwargs=True)
        model._spartan_state = state
        for i, module in enumerate(attention_modules(model)):
            module._spartan_state = state
            module._spartan_layer = i
    query_rows_per_chunk(1, 1, query_chunk)  # refuse a bad setting now, not at the first forward pass
    compile_enabled(torch.device("cpu"), compile)
    state.gate_bias = float(gate_bias)
    state.sample = sample
    state.policy = policy
    state.compile = compile
    state.query_chunk = query_chunk
    return model


def dense(model: nn.Module) -> nn.Module:
    """Undo :func:`sparsify` (in place): back to the attention implementation the model had before."""
    state = sparse_state(model)
    if state is None:
        return model
    model.set_attn_implementation(state.previous_impl)
    state.hook.remove()
    for module in attention_modules(model):
        del module._spartan_state, module._spartan_layer
    del model._spartan_state
    return model


def _require_state(model: nn.Module) -> SparseState:
    state = sparse_state(model)
    if state is None:
        raise ValueError("model is dense: call spartan_core.sparsify(model) first")
    return state


def layer_stats(model: nn.Module) -> list[GateStats]:
    """Gate statistics of the last forward pass, one entry per attention layer, in layer order."""
    state = _require_state(model)
    return [state.stats[i] for i in sorted(state.stats)]


def expected_fraction(model: nn.Module) -> torch.Tensor:
    """The regulariser: mean gate probability over every possible edge of every head in the last forward."""
    stats = layer_stats(model)
    if not stats:
        raise RuntimeError("no gate statistics recorded: run a forward pass of the sparsified model first")
    expected = torch.stack([s.expected.sum() for s in stats]).sum()
    possible = sum(float(s.possible.sum()) for s in stats)
    return expected / max(possible, 1.0)
