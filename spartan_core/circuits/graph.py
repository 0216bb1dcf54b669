"""The component graph of a causal LM and the hooks that run it with per-edge interventions.

Nodes that *write* to the residual stream (upstream nodes, in computation order):
``emb`` (token + position embedding), ``a{l}.h{h}`` (head h of layer l: its share of the attention output
projection) and ``m{l}`` (the MLP of layer l).
Inputs that *read* it (downstream inputs): ``a{l}.h{h}.q``, ``a{l}.h{h}.k``, ``a{l}.h{h}.v`` (one per head and
kind; with grouped-query attention the key/value inputs belong to key/value heads, ``a{l}.kv{g}.k``),
``m{l}`` and ``logits``. An edge joins an upstream node to every input that comes later in the residual stream:
layer-l heads read what was written before layer l, the layer-l MLP also reads the layer-l heads, the logits read
everything.

Interventions follow the edge-attribution-patching codebases (Syed et al. 2023; Hanna et al. 2024): every
upstream output of the running forward pass is recorded, and each input reads

    x_d = residual_d + sum_u A[d, u] * (corrupt_u - current_u)

where ``A`` holds one coefficient per edge (1 = ablated, 0 = kept) and ``corrupt_u`` is u's output on the corrupted
prompt (resample ablation) or its mean over a reference set (mean ablation). Because the inputs of one layer differ
per head and per q/k/v, the hooks recompute the query/key/value projections from per-input layer-normed
residuals with the projection weights sliced per head. Nothing in the modeling files is changed; the hooks sit on
the decoder blocks, the q/k/v projections, the output projection, the MLP's layer norm, the MLP and the final
norm. Optional zero "probes" added to every input give, after a backward pass, the gradient of a metric with
respect to each input, which is what EAP needs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

__all__ = ["ComponentGraph", "RunState", "EMBEDDING", "LOGITS", "find_layers"]

EMBEDDING = "emb"
LOGITS = "logits"


@dataclass
class _Layer:
    """The modules of one decoder layer the hooks need, whatever the model family calls them."""

    block: nn.Module
    attn_norm: nn.Module
    mlp_norm: nn.Module
    mlp: nn.Module
    o_proj: nn.Module
    qkv_fused: nn.Module | None  # GPT-2's c_attn (Conv1D producing [q | k | v])
    q_proj: nn.Module | None
    k_proj: nn.Module | None
    v_proj: nn.Module | None


def _is_conv1d(module: nn.Module) -> bool:
    """transformers' GPT-2 ``Conv1D``: y = x @ W + b with W stored as [in, out]."""
    return type(module).__name__ == "Conv1D"


def _weight_in_out(module: nn.Module) -> torch.Tensor:
    """The weight of a Linear or Conv1D as [in, out]."""
    return module.weight if _is_conv1d(module) else module.weight.t()


def find_layers(model: nn.Module) -> tuple[list[_Layer], nn.Module]:
    """Decoder layers and final norm of a GPT-2 or Llama-family causal LM."""
    transformer = getattr(model, "transformer", None)
    if transformer is not None and hasattr(transformer, "h") and hasattr(transformer, "ln_f"):
        layers = [
            _Layer(block=b, attn_norm=b.ln_1, mlp_norm=b.ln_2, mlp=b.mlp, o_proj=b.attn.c_proj,
                   qkv_fused=b.attn.c_attn, q_proj=None, k_proj=None, v_proj=None)
            for b in transformer.h
        ]
        return layers, transformer.ln_f
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "layers") and hasattr(inner, "norm"):
        first = inner.layers[0]
        needed = ("self_attn", "input_layernorm", "post_attention_layernorm", "mlp")
        if all(hasattr(first, name) for name in needed) and all(
            hasattr(first.self_attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")
        ):
            layers = [
                _Layer(block=b, attn_norm=b.input_layernorm, mlp_norm=b.post_attention_layernorm, mlp=b.mlp,
                       o_proj=b.self_attn.o_proj, qkv_fused=None, q_proj=b.self_attn.q_proj,
                       k_proj=b.self_attn.k_proj, v_proj=b.self_attn.v_proj)
                for b in inner.layers
            ]
            return layers, inner.norm
    raise ValueError(
        f"model: {type(model).__name__} is not a supported causal LM (GPT-2 family with transformer.h, or "
        "Llama family with model.layers and q/k/v/o projections)"
    )


@dataclass
class RunState:
    """What one forward pass through the hooks does and what it leaves behind.

    ``corrupt`` [B|1, T, n_upstream, d] and ``ablate`` [B|1, n_inputs, n_upstream] define the intervention
    (both None: a plain run). ``probe`` adds zero tensors with gradients to every input. ``embedding`` replaces
    the embedding output (used by EAP-IG to interpolate between corrupted and clean inputs).
    """

    corrupt: torch.Tensor | None = None
    ablate: torch.Tensor | None = None
    probe: bool = False
    embedding: torch.Tensor | None = None
    outputs: list[torch.Tensor] = field(default_factory=list)
    probes: list[torch.Tensor] = field(default_factory=list)
    layer_inputs: dict[int, torch.Tensor] = field(default_factory=dict)
    residual: torch.Tensor | None = None

    @property
    def intervenes(self) -> bool:
        return self.probe or self.ablate is not None

    def upstream(self) -> torch.Tensor:
        """Outputs of the current pass recorded so far, [B, T, n_recorded, d]."""
        return torch.cat(self.outputs, dim=2)


class ComponentGraph:
    """Nodes, inputs and edges of one model, plus the hooks that run it with edge interventions.

    Build it once per model (``ComponentGraph(model)``); it holds no activations. Upstream nodes and inputs are
    numbered in computation order, so the upstream nodes an input can read are always a prefix of
    :attr:`upstream`. :attr:`adjacency` [n_inputs, n_upstream] marks the edges; :attr:`edges` lists them as
    ``(source, input)`` name pairs in the order used by every score vector.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self._layers, self._final_norm = find_layers(model)
        config = model.config
        self.n_layers = len(self._layers)
        self.n_heads = int(config.num_attention_heads)
        self.n_kv_heads = int(getattr(config, "num_key_value_heads", None) or self.n_heads)
        self.d_model = int(config.hidden_size)
        self.head_dim = int(getattr(config, "head_dim", None) or self.d_model // self.n_heads)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"model: {self.n_heads} heads cannot share {self.n_kv_heads} key/value heads")
        if self._layers[0].qkv_fused is not None and self.n_kv_heads != self.n_heads:
            raise ValueError("model: a fused q/k/v projection with grouped-query attention is not supported")
        L, H, G = self.n_layers, self.n_heads, self.n_kv_heads
        kv_name = "h" if G == H else "kv"

        self.upstream: list[str] = [EMBEDDING]
        self.inputs: list[str] = []
        self.input_kind: list[str] = []  # "q", "k", "v", "mlp", "logits"
        self.input_layer: list[int] = []
        self._attn_inputs: list[slice] = []
        self._mlp_input: list[int] = []
        self._attn_available: list[int] = []
        self._mlp_available: list[int] = []
        available_of_input: list[int] = []
        for layer in range(L):
            self._attn_available.append(len(self.upstream))
            start = len(self.inputs)
            for kind, count, prefix in (("q", H, "h"), ("k", G, kv_name), ("v", G, kv_name)):
                for index in range(count):
                    self.inputs.append(f"a{layer}.{prefix}{index}.{kind}")
                    self.input_kind.append(kind)
                    self.input_layer.append(layer)
                    available_of_input.append(len(self.upstream))
            self._attn_inputs.append(slice(start, len(self.inputs)))
            self.upstream.extend(f"a{layer}.h{h}" for h in range(H))
            self._mlp_available.append(len(self.upstream))
            self._mlp_input.append(len(self.inputs))
            self.inputs.append(f"m{layer}")
            self.input_kind.append("mlp")
            self.input_layer.append(layer)
            available_of_input.append(len(self.upstream))
            self.upstream.append(f"m{layer}")
        self._logits_input = len(self.inputs)
        self.inputs.append(LOGITS)
        self.input_kind.append("logits")
        self.input_layer.append(L)
        available_of_input.append(len(self.upstream))

        self.n_upstream = len(self.upstream)
        self.n_inputs = len(self.inputs)
        available = torch.tensor(available_of_input)
        self.adjacency = torch.arange(self.n_upstream)[None, :] < available[:, None]
        self.edge_input, self.edge_source = self.adjacency.nonzero(as_tuple=True)
        self.edges: list[tuple[str, str]] = [
            (self.upstream[int(u)], self.inputs[int(d)]) for d, u in zip(self.edge_input, self.edge_source)
        ]
        self.n_edges = len(self.edges)
        self.heads: list[str] = [f"a{layer}.h{h}" for layer in range(L) for h in range(H)]
        self.head_index = torch.tensor([self.upstream.index(name) for name in self.heads])
        self.upstream_index = {name: i for i, name in enumerate(self.upstream)}

    # ---------------------------------------------------------------- naming helpers
    @property
    def edge_names(self) -> list[str]:
        return [f"{u}->{d}" for u, d in self.edges]

    def edge_mask(self, edges) -> torch.Tensor:
        """Bool [n_edges] from a collection of ``(source, input)`` pairs or ``"source->input"`` strings."""
        wanted = {tuple(e.split("->")) if isinstance(e, str) else tuple(e) for e in edges}
        unknown = wanted - set(self.edges)
        if unknown:
            raise ValueError(f"edges: not in the graph: {sorted(unknown)[:3]}")
        return torch.tensor([e in wanted for e in self.edges], dtype=torch.bool)

    def ablation_matrix(self, ablated_edges: torch.Tensor) -> torch.Tensor:
        """Coefficients [n_inputs, n_upstream] from a bool/float vector over edges (1 = ablated)."""
        if ablated_edges.shape[-1] != self.n_edges:
            raise ValueError(f"ablated_edges: expected {self.n_edges} entries, got {ablated_edges.shape[-1]}")
        lead = ablated_edges.shape[:-1]
        matrix = torch.zeros(*lead, self.n_inputs, self.n_upstream, dtype=torch.float32,
                             device=ablated_edges.device)
        matrix[..., self.edge_input, self.edge_source] = ablated_edges.float()
        return matrix

    def node_edges(self, nodes) -> torch.Tensor:
        """Bool [n_edges]: every edge leaving one of ``nodes`` (upstream names): patching those nodes."""
        names = [nodes] if isinstance(nodes, str) else list(nodes)
        unknown = [n for n in names if n not in self.upstream_index]
        if unknown:
            raise ValueError(f"nodes: not upstream nodes of the graph: {unknown[:3]}")
        index = torch.tensor([self.upstream_index[n] for n in names], dtype=torch.long)
        return torch.isin(self.edge_source, index)

    # ---------------------------------------------------------------- weights sliced per head
    def _qkv_weights(self, layer: _Layer):
        """[(W [n, head_dim, d], b [n, head_dim] | None) for q, k, v] with n heads (k/v: key/value heads)."""
        H, G, dh, d = self.n_heads, self.n_kv_heads, self.head_dim, self.d_model
        if layer.qkv_fused is not None:
            w = _weight_in_out(layer.qkv_fused)  # [d, 3 * H * dh]
            b = layer.qkv_fused.bias
            out = []
            for i in range(3):
                wi = w[:, i * H * dh:(i + 1) * H * dh].t().reshape(H, dh, d)
                bi = None if b is None else b[i * H * dh:(i + 1) * H * dh].reshape(H, dh)
                out.append((wi, bi))
            return out
        out = []
        for proj, n in ((layer.q_proj, H), (layer.k_proj, G), (layer.v_proj, G)):
            w = _weight_in_out(proj).t().reshape(n, dh, d)
            b = None if proj.bias is None else proj.bias.reshape(n, dh)
            out.append((w, b))
        return out

    def _out_weight(self, layer: _Layer) -> torch.Tensor:
        """Output projection as [H, head_dim, d]."""
        return _weight_in_out(layer.o_proj).reshape(self.n_heads, self.head_dim, self.d_model)

    # ---------------------------------------------------------------- the intervention
    def _input_residual(self, state: RunState, residual: torch.Tensor, rows, available: int) -> torch.Tensor:
        """Residual read by the inputs ``rows`` (a slice or an int), [B, T, n, d] for a slice, [B, T, d] for an int."""
        single = isinstance(rows, int)
        row_slice = slice(rows, rows + 1) if single else rows
        n = row_slice.stop - row_slice.start
        x = residual[:, :, None, :].expand(*residual.shape[:2], n, residual.shape[-1])
        if state.ablate is not None:
            start = 0
            for chunk in state.outputs:  # chunk by chunk: no concatenation of every upstream output
                stop = start + chunk.shape[2]
                if stop > available:
                    break
                difference = state.corrupt[:, :, start:stop].to(residual.dtype) - chunk
                coefficients = state.ablate[:, row_slice, start:stop].to(residual.dtype)
                coefficients = coefficients.expand(difference.shape[0], *coefficients.shape[1:])
                x = x + torch.einsum("btud,bnu->btnd", difference, coefficients)
                start = stop
        if state.probe:
            probe = torch.zeros(x.shape, dtype=x.dtype, device=x.device, requires_grad=True)
            state.probes.append(probe)
            x = x + probe
        return x[:, :, 0] if single else x

    def _attention_inputs(self, state: RunState, index: int) -> list[torch.Tensor]:
        """Per-head q, k, v projections of layer ``index`` computed from per-input residuals (cached per pass)."""
        if index not in state.layer_inputs:
            layer = self._layers[index]
            x = self._input_residual(state, state.residual, self._attn_inputs[index], self._attn_available[index])
            normed = layer.attn_norm.forward(x)
            H, G = self.n_heads, self.n_kv_heads
            parts = (normed[:, :, :H], normed[:, :, H:H + G], normed[:, :, H + G:])
            projected = []
            for part, (w, b) in zip(parts, self._qkv_weights(layer)):
                y = torch.einsum("btnd,ned->btne", part, w.to(part.dtype))
                if b is not None:
                    y = y + b.to(y.dtype)
                projected.append(y.reshape(*y.shape[:2], -1))
            state.layer_inputs[index] = projected
        return state.layer_inputs[index]

    @contextlib.contextmanager
    def hooks(self, state: RunState) -> Iterator[RunState]:
        """Install the hooks for the forward passes run inside the ``with`` block."""
        handles = []

        def block_pre(index):
            def hook(module, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                if index == 0:
                    if state.embedding is not None:
                        hidden = state.embedding.to(hidden.dtype)
                        if args:
                            args = (hidden, *args[1:])
                        else:
                            kwargs = {**kwargs, "hidden_states": hidden}
                    state.outputs.append(hidden[:, :, None, :])
                state.residual = hidden
                return args, kwargs
            return hook

        def qkv_hook(index, which):
            def hook(module, args, output):
                if not state.intervenes:
                    return None
                projected = self._attention_inputs(state, index)
                return torch.cat(projected, dim=-1) if which is None else projected[which]
            return hook

        def o_pre(index):
            def hook(module, args):
                z = args[0]
                heads = z.reshape(*z.shape[:2], self.n_heads, self.head_dim)
                w = self._out_weight(self._layers[index]).to(z.dtype)
                state.outputs.append(torch.einsum("bthe,hed->bthd", heads, w))
            return hook

        def mlp_norm_pre(index):
            def hook(module, args):
                if not state.intervenes:
                    return None
                x = self._input_residual(state, args[0], self._mlp_input[index], self._mlp_available[index])
                return (x, *args[1:])
            return hook

        def mlp_post(module, args, output):
            state.outputs.append(output[:, :, None, :])

        def final_pre(module, args):
            if not state.intervenes:
                return None
            x = self._input_residual(state, args[0], self._logits_input, self.n_upstream)
            return (x, *args[1:])

        try:
            for index, layer in enumerate(self._layers):
                handles.append(layer.block.register_forward_pre_hook(block_pre(index), with_kwargs=True))
                if layer.qkv_fused is not None:
                    handles.append(layer.qkv_fused.register_forward_hook(qkv_hook(index, None)))
                else:
                    for which, proj in enumerate((layer.q_proj, layer.k_proj, layer.v_proj)):
                        handles.append(proj.register_forward_hook(qkv_hook(index, which)))
                handles.append(layer.o_proj.register_forward_pre_hook(o_pre(index)))
                handles.append(layer.mlp_norm.register_forward_pre_hook(mlp_norm_pre(index)))
                handles.append(layer.mlp.register_forward_hook(mlp_post))
            handles.append(self._final_norm.register_forward_pre_hook(final_pre))
            yield state
        finally:
            for handle in handles:
                handle.remove()

    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
            state: RunState | None = None) -> tuple[torch.Tensor, RunState]:
        """One forward pass through the hooks; returns (logits, state) with the upstream outputs recorded."""
        state = RunState() if state is None else state
        state.outputs, state.probes, state.layer_inputs = [], [], {}
        with self.hooks(state):
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        if len(state.outputs) != 1 + self.n_layers * 2:
            raise RuntimeError(
                f"hooks recorded {len(state.outputs)} output groups, expected {1 + 2 * self.n_layers}: "
                "the model's forward pass does not go through the modules the graph found"
            )
        return logits, state
