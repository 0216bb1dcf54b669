"""Gated sparse attention (SPARTAN-style), pure torch, any device.

Each causal edge (query i, key j) of a head is kept only when a binary gate says so. The gate logit is the
head's own scaled score s_ij = q_i . k_j / sqrt(d) plus a constant bias b, so the method adds no parameters:

* training (``sample=True``): m_ij = 1[s_ij + b + logistic noise > 0], with a straight-through gradient
  through sigmoid(s_ij + b + noise) (binary Gumbel-softmax at temperature 1), fresh noise for every entry;
* evaluation (``sample=False``): m_ij = 1[s_ij + b > 0].

The output is the ordinary softmax over all allowed keys multiplied by the mask, *without* renormalisation,
so a row can sum to less than one, or to zero.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, replace

import torch
from torch.utils.checkpoint import checkpoint

__all__ = ["GateStats", "AttentionLayer", "AttentionPath", "gated_attention", "sparse_attention", "causal_allowed",
           "compile_enabled", "query_rows_per_chunk", "CHUNK_ABOVE", "CHUNK_ROWS"]

CHUNK_ABOVE = 512  # a training call with more queries than this runs in query chunks
CHUNK_ROWS = 128  # query rows per chunk


@dataclass
class GateStats:
    """What one attention call tells the regulariser and the edge counter.

    Sums, not means, so that calls can be added up over layers and batches without weighting errors.
    ``expected`` keeps its graph (it is the differentiable regulariser); the others are detached.
    """

    expected: torch.Tensor  # [H] sum of sigmoid(s + b) over possible edges (float32, differentiable)
    kept: torch.Tensor  # [H] number of edges whose mask is 1 (float64, detached)
    possible: torch.Tensor  # [H] number of allowed (causal, non-padding) edges with a real query
    queries: torch.Tensor  # [] number of real (non-padding) query rows, summed over the batch
    kept_by_position: torch.Tensor  # [Tq] kept edges summed over batch and heads, by query position
    queries_by_position: torch.Tensor  # [Tq] real query rows (batch x heads) by query position
    possible_by_position: torch.Tensor  # [Tq] possible edges summed over batch and heads, by query position

    @property
    def expected_fraction(self) -> torch.Tensor:
        """Differentiable mean of sigmoid(s + b) over possible edges: the paper's regulariser."""
        return self.expected.sum() / self.possible.sum().clamp_min(1).to(self.expected.dtype)

    @property
    def kept_fraction(self) -> float:
        return float(self.kept.sum() / self.possible.sum().clamp_min(1))


@dataclass(frozen=True)
class AttentionLayer:
    """What the calling attention layer brings besides q, k and v: its score scale and dropout, and the fixed mask
    policy that replaces the gate there, which needs the layer's index (a random pattern differs by layer)."""

    scale: float | None = None  # None: 1 / sqrt(head_dim)
    dropout: float = 0.0  # training only: drops kept edges after gating
    policy: object = None  # a MaskPolicy; None: the gate decides the mask
    index: int = 0


@dataclass(frozen=True)
class AttentionPath:
    """How a call is computed, never what: every path gives the reference result (tests hold them to it), so a
    caller chooses one for speed or memory alone."""

    compiled: bool = False  # the reference rows through torch.compile
    query_chunk: int | None = None  # query rows per chunk of a training call (see query_rows_per_chunk)
    need_weights: bool = True  # False lets an evaluation call on CPU take the fused kernel, which returns no weights


def causal_allowed(
    batch: int, q_len: int, k_len: int, attention_mask: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """Boolean [B, 1, Tq, Tk] mask of allowed edges: causal (queries are the last Tq of the Tk keys), keys not
    padding, and queries not padding. ``attention_mask`` is a [B, Tk] padding mask, 1/True for real tokens."""
    offset = k_len - q_len
    q_pos = torch.arange(q_len, device=device)[:, None] + offset
    k_pos = torch.arange(k_len, device=device)[None, :]
    allowed = (k_pos <= q_pos)[None, None].expand(batch, 1, q_len, k_len)
    if attention_mask is not None:
        if attention_mask.shape != (batch, k_len):
            raise ValueError(
                f"attention_mask must be [batch, time] = {(batch, k_len)}, got {tuple(attention_mask.shape)}"
            )
        real = attention_mask.to(device=device, dtype=torch.bool)
        allowed = allowed & real[:, None, None, :] & real[:, None, -q_len:, None]
    return allowed


def _repeat_kv(x: torch.Tensor, heads: int) -> torch.Tensor:
    """Grouped-query attention: repeat each key/value head so that every query head has its own."""
    kv_heads = x.shape[1]
    if kv_heads == heads:
        return x
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads cannot share {kv_heads} key/value heads")
    return x.repeat_interleave(heads // kv_heads, dim=1)


def _gate_decision(scores, allowed, gate_bias: float, noise):
    """The gate on allowed edges: (noisy logits, hard keep mask, sigmoid(logits) with 0 off the allowed edges)."""
    logits = scores + gate_bias if gate_bias else scores
    noisy = logits if noise is None else logits + noise
    return noisy, (noisy > 0) & allowed, torch.sigmoid(logits).masked_fill_(~allowed, 0.0)


class _GatedSoftmax(torch.autograd.Function):
    """softmax(scores) x gate in one autograd node, saving two score-sized tensors instead of about six.

    Forward: P = softmax over allowed keys, hard = 1[logits (+ noise) > 0] on allowed edges, W = P * hard, and the
    expected kept count per head, sum of sigmoid(logits) over allowed edges.
    Backward (straight-through when sampling: dgate/dscore = s(1 - s) at the noisy logit, s = sigmoid):
    dS = P * (dW * c - rowsum(dW * W)) with c = hard + s(1 - s), plus the regulariser's sigmoid'(logits) term.
    """

    @staticmethod
    def forward(ctx, scores, allowed, gate_bias, noise, keep):
        blocked = ~allowed
        probs = torch.softmax(scores.masked_fill(blocked, torch.finfo(scores.dtype).min), dim=-1)
        probs.masked_fill_(blocked, 0.0)
        noisy, hard, gate_probs = _gate_decision(scores, allowed, gate_bias, noise)
        if keep is not None:
            hard = keep & allowed
        weights = probs * hard
        expected = gate_probs.sum((0, 2, 3))
        ctx.mark_non_differentiable(hard)
        if not ctx.needs_input_grad[0]:  # evaluation, counting, patching: nothing to save for a backward pass
            return weights, expected, hard
        if noise is None:
            slope = hard.to(scores.dtype)
        else:
            noisy_probs = torch.sigmoid(noisy)
            slope = noisy_probs.mul_(1 - noisy_probs).add_(hard)
        ctx.save_for_backward(probs, slope, gate_probs.mul_(1 - gate_probs))
        return weights, expected, hard

    @staticmethod
    def backward(ctx, d_weights, d_expected, _):
        probs, slope, gate_slope = ctx.saved_tensors
        weights = probs * (slope >= 1)
        row = (d_weights * weights).sum(-1, keepdim=True)
        d_scores = probs * (d_weights * slope - row)
        if d_expected is not None:
            d_scores += d_expected[None, :, None, None] * gate_slope
        return d_scores, None, None, None, None


def compile_enabled(device: torch.device, requested: bool | None = None) -> bool:
    """Whether the gate runs through ``torch.compile``: ``requested`` if given, else ``SPARTAN_COMPILE``
    (``auto``, ``1`` or ``0``). ``auto`` compiles on CUDA only: on CPU the compiled call measured no faster than
    eager (``make bench``, gate_call line), and its first call costs a compile of ~20 s."""
    if requested is not None:
        return bool(requested)
    setting = os.environ.get("SPARTAN_COMPILE", "auto").strip().lower()
    if setting not in ("auto", "0", "1"):
        raise ValueError(f"SPARTAN_COMPILE: must be auto, 1 or 0, got {setting!r}")
    return torch.device(device).type == "cuda" if setting == "auto" else setting == "1"


def query_rows_per_chunk(q_len: int, k_len: int, requested: int | None = None) -> int:
    """Query rows per chunk of a training call. ``requested``: 0 never chunks, n > 0 chunks by n rows; None
    chunks by CHUNK_ROWS once the call has more than CHUNK_ABOVE queries, where the [B, H, Tq, Tk] tensors saved
    for backward start to decide whether a micro-batch fits."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
            raise ValueError(f"query_chunk: must be a whole number >= 0 (0: never chunk), got {requested!r}")
        return requested or q_len
    return CHUNK_ROWS if q_len > CHUNK_ABOVE else q_len


def _logistic_noise(scores: torch.Tensor) -> torch.Tensor:
    return torch.logit(torch.empty_like(scores).uniform_(), eps=1e-6)


def _scores(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    scores = torch.matmul(q * scale, k.transpose(-1, -2))
    return scores.to(torch.promote_types(scores.dtype, torch.float32))  # at least float32; float64 stays float64


def _gated_rows(q, k, v, allowed, gate_bias: float, sample: bool, layer: AttentionLayer):
    """The reference computation for a block of query rows (k, v already one per query head; ``layer.scale`` set).
    Returns (output, masked weights, expected kept count per head, kept edges per row [B, H, Tq] int32)."""
    scores = _scores(q, k, layer.scale)
    noise = keep = None
    if layer.policy is not None:
        keep = layer.policy.keep(scores.detach(), allowed, layer.index)
    elif sample:
        noise = _logistic_noise(scores)
    weights, expected, hard = _GatedSoftmax.apply(scores, allowed, gate_bias, noise, keep)
    weights = weights.to(v.dtype)
    dropout = layer.dropout
    out = torch.matmul(torch.nn.functional.dropout(weights, p=dropout) if dropout else weights, v)
    return out, weights, expected, hard.sum(-1, dtype=torch.int32)


def _fused_eval_rows(q, k, v, allowed, gate_bias: float, sample: bool, layer: AttentionLayer):
    """Exact evaluation through the CPU's fused attention kernel, which returns each row's log-sum-exp.

    The gate keeps softmax-over-allowed weights without renormalising: out = attn_kept · exp(lse_kept − lse_all),
    where attn_kept is fused attention over the kept keys only. Same masks as :func:`_gated_rows` (same scores,
    same noise draw), output equal to rounding; no [B, H, Tq, Tk] tensor beyond the scores and the mask.
    It takes the arguments of :func:`_gated_rows`, so that either stands in for the other; the layer's dropout and
    policy never reach this path.
    """
    scale = layer.scale
    scores = _scores(q, k, scale)
    _, keep, gate_probs = _gate_decision(scores, allowed, gate_bias, _logistic_noise(scores) if sample else None)
    expected = gate_probs.sum((0, 2, 3))
    blocked_all = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill_(~allowed, -math.inf)
    kept_rows = keep.sum(-1, dtype=torch.int32)
    kept_mask = scores.zero_().masked_fill_(~keep, -math.inf)  # the scores' buffer, no longer needed
    kept_out, lse_kept = _FLASH_CPU(q, k, v, attn_mask=kept_mask, scale=scale)
    _, lse_all = _FLASH_CPU(q, k, v, attn_mask=blocked_all, scale=scale)
    out = torch.where(kept_rows[..., None] > 0, kept_out * torch.exp(lse_kept - lse_all)[..., None], 0.0)
    return out, None, expected, kept_rows


_FLASH_CPU = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


class _CompiledRows:
    """``_gated_rows`` through torch.compile, built at the first call, whose compile time is printed and kept
    in ``compile_seconds`` (reported, not hidden)."""

    def __init__(self):
        self.function = None
        self.compile_seconds: float | None = None

    def __call__(self, *args):
        if self.function is not None:
            return self.function(*args)
        self.function = torch.compile(_gated_rows)
        started = time.perf_counter()
        result = self.function(*args)
        self.compile_seconds = time.perf_counter() - started
        print(f"spartan_core: compiled the gated attention in {self.compile_seconds:.1f} s (first call; "
              "SPARTAN_COMPILE=0 turns compiling off)", file=sys.stderr)
        return result


_COMPILED_ROWS = _CompiledRows()


def gated_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allowed: torch.Tensor,
    *,
    gate_bias: float = 0.0,
    sample: bool = False,
    compute_stats: bool = True,
    layer: AttentionLayer = AttentionLayer(),
    path: AttentionPath = AttentionPath(),
) -> tuple[torch.Tensor, torch.Tensor | None, GateStats | None]:
    """Core of the mechanism for any boolean ``allowed`` mask broadcastable to [B, H, Tq, Tk].

    q is [B, H, Tq, D]; k, v are [B, H_kv, Tk, D] (H_kv divides H). A query row is real when it may attend to
    at least one key. The ``layer``'s dropout (training only) drops kept edges after gating; its fixed mask policy
    (:class:`~spartan_core.mechanism.policies.MaskPolicy`, told the layer's index) decides the mask in place of
    the gate; the gradient then flows through the softmax only, as through a gate that does not move.

    Three paths give the same result (tests hold them to the reference): the reference; with a gradient, query
    chunks of ``path.query_chunk`` rows (:func:`query_rows_per_chunk`), each recomputed in backward, so memory
    grows like Tk x chunk rather than Tq x Tk; without a gradient on CPU when ``path.need_weights`` is False, the
    fused kernel (:func:`_fused_eval_rows`). ``path.compiled`` runs the reference rows through torch.compile.
    Returns (output [B, H, Tq, D], masked attention weights [B, H, Tq, Tk] or None when not computed, stats).
    """
    batch, heads, q_len, head_dim = q.shape
    k = _repeat_kv(k, heads)
    v = _repeat_kv(v, heads)
    if layer.scale is None:
        layer = replace(layer, scale=head_dim**-0.5)
    gate_bias = float(gate_bias)
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    policy = layer.policy
    rows = _COMPILED_ROWS if path.compiled and policy is None else _gated_rows
    chunk = query_rows_per_chunk(q_len, k.shape[2], path.query_chunk)
    if policy is None and not grad and not layer.dropout and not path.need_weights and q.device.type == "cpu" \
            and q.dtype == torch.float32:
        out, weights, expected, kept_rows = _fused_eval_rows(q, k, v, allowed, gate_bias, sample, layer)
    elif grad and policy is None and chunk < q_len:
        pieces = []
        allowed = allowed.expand(-1, -1, q_len, -1)  # a mask broadcast over queries, sliced like the queries
        for start in range(0, q_len, chunk):
            rows_at = slice(start, start + chunk)
            pieces.append(checkpoint(rows, q[:, :, rows_at], k, v, allowed[:, :, rows_at], gate_bias, sample,
                                     layer, use_reentrant=False))
        out = torch.cat([p[0] for p in pieces], dim=2)
        expected = torch.stack([p[2] for p in pieces]).sum(0)
        kept_rows = torch.cat([p[3] for p in pieces], dim=2)
        weights = None
    else:
        out, weights, expected, kept_rows = rows(q, k, v, allowed, gate_bias, sample, layer)

    stats = None
    if compute_stats:
        with torch.no_grad():
            # Row sums (integers, no float copy of a [B, H, Tq, Tk] tensor), then small float64 reductions.
            allowed_rows = allowed.sum(-1, dtype=torch.int32).expand(batch, allowed.shape[1], q_len)  # [B, 1|H, Tq]
            real_rows = allowed_rows > 0
            heads_per_mask = heads // allowed.shape[1]
            stats = GateStats(
                expected=expected,
                kept=kept_rows.sum((0, 2), dtype=torch.float64),
                possible=allowed_rows.sum((0, 2), dtype=torch.float64).expand(heads).clone(),
                queries=real_rows[:, 0].sum(dtype=torch.float64),
                kept_by_position=kept_rows.sum((0, 1), dtype=torch.float64),
                queries_by_position=real_rows.sum((0, 1), dtype=torch.float64) * heads_per_mask,
                possible_by_position=allowed_rows.sum((0, 1), dtype=torch.float64) * heads_per_mask,
            )
    return out, weights, stats


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    gate_bias: float = 0.0,
    sample: bool = False,
    scale: float | None = None,
) -> tuple[torch.Tensor, GateStats]:
    """Public entry point: causal gated sparse attention.

    q, k, v are [batch, heads, time, head_dim] (k and v may have fewer heads: grouped-query attention);
    ``attention_mask`` is an optional [batch, time] padding mask (1/True for real tokens, as in Hugging Face).
    Returns the attention output [batch, heads, time, head_dim] and the :class:`GateStats` of the call.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("q, k and v must be [batch, heads, time, head_dim]")
    allowed = causal_allowed(q.shape[0], q.shape[2], k.shape[2], attention_mask, q.device)
    out, _, stats = gated_attention(q, k, v, allowed, gate_bias=gate_bias, sample=sample,
                                    layer=AttentionLayer(scale=scale))
    return out, stats
