"""Chapter 1's question: does the gate do what the paper says? Open gates reproduce dense attention, kept rows are
not renormalised, and a sampled mask keeps each edge with probability sigmoid(s + b).

:func:`one_head` runs the library's ``gated_attention`` on one random head, :func:`sample_masks` draws many
training masks for it, and :func:`check_model` sparsifies a whole transformers model; each returns a dataclass
with its numbers and the sentence that says what they show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .._util import eager_attention, eval_mode
from ..mechanism.gate import causal_allowed, gated_attention
from ..mechanism.sparsify import dense, layer_stats, sparsify

__all__ = ["HeadExample", "SamplingCheck", "ModelCheck", "one_head", "sample_masks", "random_gpt2", "check_model",
           "claim_sentence"]


@dataclass
class HeadExample:
    """One head on random vectors: every [query, key] matrix of the mechanism, from score to kept weight."""

    gate_bias: float
    q: torch.Tensor  # [1, 1, T, D]; kept so that :func:`sample_masks` can redraw masks for the same head
    k: torch.Tensor
    v: torch.Tensor
    causal: torch.Tensor  # [T, T] bool
    gate_probability: torch.Tensor  # sigmoid(s + b) on causal edges, 0 elsewhere
    deterministic_mask: torch.Tensor  # 1[s + b > 0] on causal edges
    dense_weights: torch.Tensor  # the gated function with b = +inf
    kept_weights: torch.Tensor  # the deterministic (evaluation) mask applied
    sampled_weights: torch.Tensor  # one sampled (training) mask applied
    kept_fraction: float
    expected_fraction: float  # the regulariser as the library computes it

    @property
    def mask_is_threshold(self) -> bool:
        return bool(torch.equal(self.kept_weights > 0, self.deterministic_mask))

    @property
    def kept_is_softmax_times_mask(self) -> bool:
        return bool(torch.allclose(self.kept_weights, self.dense_weights * self.deterministic_mask))

    @property
    def regulariser_is_mean_probability(self) -> bool:
        manual = float(self.gate_probability.sum() / self.causal.sum())
        return abs(self.expected_fraction - manual) < 1e-6

    @property
    def kept_row_sums(self) -> torch.Tensor:
        return self.kept_weights.sum(-1)

    def panels(self) -> list[tuple[torch.Tensor, str]]:
        """The five matrices of the mechanism figure, each with its title."""
        return [(self.dense_weights, "dense softmax weights"), (self.gate_probability, "gate probability σ(s + b)"),
                (self.sampled_weights > 0, "a sampled mask (training)"),
                (self.deterministic_mask, "deterministic mask (evaluation)"),
                (self.kept_weights, "kept weights (not renormalised)")]

    def rows(self) -> pd.DataFrame:
        """One row per query: possible and kept keys, and the kept and dense weight sums."""
        return pd.DataFrame({"query": range(len(self.causal)), "possible_keys": self.causal.sum(-1).tolist(),
                             "kept_keys": self.deterministic_mask.sum(-1).tolist(),
                             "kept_weight_sum": self.kept_row_sums.tolist(),
                             "dense_weight_sum": self.dense_weights.sum(-1).tolist()})

    def metrics(self) -> dict:
        sums = self.kept_row_sums
        return {"example_kept_fraction": self.kept_fraction, "example_expected_fraction": self.expected_fraction,
                "example_row_sum_min": float(sums.min()), "example_row_sum_mean": float(sums.mean()),
                "example_row_sum_max": float(sums.max()), "example_mask_is_threshold": self.mask_is_threshold,
                "example_kept_is_softmax_times_mask": self.kept_is_softmax_times_mask,
                "example_regulariser_is_mean_probability": self.regulariser_is_mean_probability}

    @property
    def sentence(self) -> str:
        sums = self.kept_row_sums
        holds = self.mask_is_threshold and self.kept_is_softmax_times_mask and self.regulariser_is_mean_probability
        return (f"At b = {self.gate_bias:g} the deterministic mask keeps {self.kept_fraction:.0%} of the causal edges "
                f"(the regulariser, the mean gate probability, is {self.expected_fraction:.0%}). The kept rows sum "
                f"to between {float(sums.min()):.2f} and {float(sums.max()):.2f} rather than always 1: the weights "
                f"are not renormalised. " + ("The kept weights are exactly the dense weights times the mask "
                                             "1[s + b > 0]." if holds else
                                             "The kept weights are NOT the dense weights times 1[s + b > 0]."))


@dataclass
class SamplingCheck:
    """How often each causal edge was kept in ``draws`` sampled masks, against its gate probability."""

    draws: int
    gate_probability: np.ndarray  # one value per causal edge
    keep_frequency: np.ndarray

    @property
    def max_abs_error(self) -> float:
        return float(np.abs(self.keep_frequency - self.gate_probability).max())

    @property
    def noise_sd_bound(self) -> float:
        """The largest binomial standard deviation of a frequency over ``draws`` draws (at p = 1/2)."""
        return 0.5 / math.sqrt(self.draws)

    def metrics(self) -> dict:
        return {"sampling_draws": self.draws, "sampling_max_abs_error": self.max_abs_error,
                "sampling_noise_sd_bound": self.noise_sd_bound}

    @property
    def sentence(self) -> str:
        ratio = self.max_abs_error / self.noise_sd_bound
        verdict = "within binomial noise" if ratio < 6 else "further than binomial noise allows"
        return (f"Over {self.draws} sampled masks the largest gap between an edge's keep frequency and σ(s + b) is "
                f"{self.max_abs_error:.4f}, {ratio:.1f} times the largest binomial standard deviation: {verdict}.")


@dataclass
class ModelCheck:
    """A transformers model with gates open (b = +inf) and at ``gate_bias``, against its dense self."""

    description: str
    gate_bias: float
    open_max_abs_logit_diff: float
    open_max_abs_attention_diff: float
    gated_max_abs_logit_diff: float
    gated_max_abs_attention_diff: float
    gated_kept_fraction_by_layer: list[float]
    gated_row_sum_min: float
    gated_row_sum_mean: float
    gated_row_sum_max: float
    dense_layer0: torch.Tensor  # [heads, T, T] of the first sequence
    gated_layer0: torch.Tensor

    @property
    def gated_kept_fraction(self) -> float:
        return float(np.mean(self.gated_kept_fraction_by_layer))

    def table(self) -> pd.DataFrame:
        """The comparison as displayed: one column per gate setting."""
        return pd.DataFrame({
            "b = +inf (all gates open)": [self.open_max_abs_logit_diff, self.open_max_abs_attention_diff, 1.0],
            f"b = {self.gate_bias:g}": [self.gated_max_abs_logit_diff, self.gated_max_abs_attention_diff,
                                        self.gated_kept_fraction],
        }, index=["max |logit - dense logit|", "max |attention - dense attention|", "kept edge fraction"])

    def metrics(self) -> dict:
        return {"model": self.description, "open_gates_max_abs_logit_diff": self.open_max_abs_logit_diff,
                "open_gates_max_abs_attention_diff": self.open_max_abs_attention_diff,
                "gated_max_abs_logit_diff": self.gated_max_abs_logit_diff,
                "gated_max_abs_attention_diff": self.gated_max_abs_attention_diff,
                "gated_kept_fraction_by_layer": list(self.gated_kept_fraction_by_layer),
                "gated_row_sum_min": self.gated_row_sum_min, "gated_row_sum_mean": self.gated_row_sum_mean,
                "gated_row_sum_max": self.gated_row_sum_max}

    @property
    def sentence(self) -> str:
        same = self.open_max_abs_logit_diff < 1e-5 and self.open_max_abs_attention_diff < 1e-5
        return (f"With every gate open the {self.description} " + ("computes" if same else "does NOT compute")
                + f" its dense logits (largest difference {self.open_max_abs_logit_diff:.1e}). At b = "
                f"{self.gate_bias:g} the untrained gates keep {self.gated_kept_fraction:.0%} of the edges and move "
                f"the logits by up to {self.gated_max_abs_logit_diff:.2f}: gating alone changes the model, which is "
                f"why the method post-trains it.")


def one_head(seq_len: int, head_dim: int, gate_bias: float, seed: int = 0) -> HeadExample:
    """Random queries, keys and values for one head of ``seq_len`` tokens, through ``gated_attention``."""
    generator = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(3, 1, 1, seq_len, head_dim, generator=generator).unbind(0)
    allowed = causal_allowed(1, seq_len, seq_len, None, q.device)
    causal = allowed[0, 0]
    scores = (q @ k.transpose(-1, -2))[0, 0] / math.sqrt(head_dim)
    _, dense_weights, _ = gated_attention(q, k, v, allowed, gate_bias=math.inf)
    _, kept_weights, stats = gated_attention(q, k, v, allowed, gate_bias=gate_bias)
    torch.manual_seed(seed)
    _, sampled_weights, _ = gated_attention(q, k, v, allowed, gate_bias=gate_bias, sample=True)
    return HeadExample(gate_bias=float(gate_bias), q=q, k=k, v=v, causal=causal,
                       gate_probability=torch.sigmoid(scores + gate_bias) * causal,
                       deterministic_mask=(scores + gate_bias > 0) & causal, dense_weights=dense_weights[0, 0],
                       kept_weights=kept_weights[0, 0], sampled_weights=sampled_weights[0, 0],
                       kept_fraction=stats.kept_fraction, expected_fraction=float(stats.expected_fraction))


def sample_masks(example: HeadExample, n_samples: int, seed: int = 0) -> SamplingCheck:
    """Draw ``n_samples`` training masks for the example's head at once and count how often each edge is kept."""
    if n_samples < 1:
        raise ValueError(f"n_samples: need at least one draw, got {n_samples}")
    torch.manual_seed(seed)
    many = [x.expand(n_samples, *x.shape[1:]) for x in (example.q, example.k, example.v)]
    allowed = example.causal[None, None]
    _, weights, _ = gated_attention(*many, allowed, gate_bias=example.gate_bias, sample=True, compute_stats=False)
    frequency = (weights[:, 0] > 0).double().mean(0)
    return SamplingCheck(draws=n_samples, gate_probability=example.gate_probability[example.causal].double().numpy(),
                         keep_frequency=frequency[example.causal].numpy())


def random_gpt2(layers: int, heads: int, head_dim: int, positions: int, vocab_size: int = 256, seed: int = 0):
    """A randomly initialised GPT-2 (eager attention, eval mode): the mechanism needs no trained weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=layers, n_head=heads, n_embd=heads * head_dim, vocab_size=vocab_size,
                        n_positions=positions, bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()


@torch.no_grad()
def check_model(model, input_ids: torch.Tensor, gate_bias: float, description: str = "model") -> ModelCheck:
    """Run ``model`` dense, with gates open and at ``gate_bias`` on the same tokens; the model is left dense."""
    with eval_mode(model), eager_attention(model):
        dense_out = model(input_ids, output_attentions=True)
        sparsify(model, gate_bias=math.inf)
        open_out = model(input_ids, output_attentions=True)
        sparsify(model, gate_bias=gate_bias)
        gated_out = model(input_ids, output_attentions=True)
        kept_by_layer = [s.kept_fraction for s in layer_stats(model)]
        dense(model)

    def largest_gap(left, right) -> float:
        return max(float((a - b).abs().max()) for a, b in zip(left, right))

    row_sums = torch.cat([a.sum(-1).flatten() for a in gated_out.attentions])
    return ModelCheck(
        description=description, gate_bias=float(gate_bias),
        open_max_abs_logit_diff=float((open_out.logits - dense_out.logits).abs().max()),
        open_max_abs_attention_diff=largest_gap(open_out.attentions, dense_out.attentions),
        gated_max_abs_logit_diff=float((gated_out.logits - dense_out.logits).abs().max()),
        gated_max_abs_attention_diff=largest_gap(gated_out.attentions, dense_out.attentions),
        gated_kept_fraction_by_layer=kept_by_layer, gated_row_sum_min=float(row_sums.min()),
        gated_row_sum_mean=float(row_sums.mean()), gated_row_sum_max=float(row_sums.max()),
        dense_layer0=dense_out.attentions[0][0], gated_layer0=gated_out.attentions[0][0])


def claim_sentence(sampling: SamplingCheck, model: ModelCheck) -> str:
    """The mechanism row of the claims table."""
    rows = f"{model.gated_row_sum_min:.2f}–{model.gated_row_sum_max:.2f}"
    return (f"open gates (b = +∞) reproduce dense GPT-2 logits to {model.open_max_abs_logit_diff:.1e}; at b = "
            f"{model.gate_bias:g} kept-weight rows sum to {rows} (no renormalisation); sampled keep frequency = "
            f"σ(s + b) within {sampling.max_abs_error:.3f} over {sampling.draws} draws")
