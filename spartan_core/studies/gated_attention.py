"""Chapter 1's question: does the gate do what the paper says? Open gates reproduce dense attention, kept rows are
not renormalised, and a sampled mask keeps each edge with probability sigmoid(s + b). :func:`one_head` runs the
library's ``gated_attention`` on one random head, :func:`sample_masks` draws many training masks for it and
:func:`check_model` sparsifies a whole transformers model, each returning its numbers and the sentence that says
what they show; :func:`mechanism_claim` judges the chapter's claim from them."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from .._util import eager_attention, eval_mode
from ..claims import Claim
from ..formatting import DECIMAL1, DECIMAL2, DECIMAL3, DECIMAL4, PERCENT_WHOLE, SCIENTIFIC, SETTING
from ..mechanism.gate import causal_allowed, gated_attention
from ..mechanism.sparsify import dense, layer_stats, sparsify

__all__ = ["HeadExample", "SamplingCheck", "ModelCheck", "one_head", "sample_masks", "random_gpt2", "check_model",
           "mechanism_claim"]


@dataclass(frozen=True)
class HeadExample:
    """One head on random vectors: every [query, key] matrix of the mechanism, from score to kept weight."""

    gate_bias: float
    qkv: tuple[torch.Tensor, ...]  # [1, 1, T, D] each; kept so that :func:`sample_masks` can redraw its masks
    causal: torch.Tensor  # [T, T] bool
    gate_probability: torch.Tensor  # sigmoid(s + b) on causal edges, 0 elsewhere
    deterministic_mask: torch.Tensor  # 1[s + b > 0] on causal edges
    dense_weights: torch.Tensor  # the gated function with b = +inf
    kept_weights: torch.Tensor  # the deterministic (evaluation) mask applied
    sampled_weights: torch.Tensor  # one sampled (training) mask applied
    kept_fraction: float
    expected_fraction: float  # the regulariser as the library computes it

    def checks(self) -> dict[str, bool]:
        """What the mechanism promises: kept = 1[s + b > 0] x dense weights; regulariser = mean gate probability."""
        mean_probability = float(self.gate_probability.sum() / self.causal.sum())
        return {"mask_is_threshold": bool(torch.equal(self.kept_weights > 0, self.deterministic_mask)),
                "kept_is_softmax_times_mask": bool(torch.allclose(self.kept_weights,
                                                                  self.dense_weights * self.deterministic_mask)),
                "regulariser_is_mean_probability": abs(self.expected_fraction - mean_probability) < 1e-6}

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
                             "kept_keys": self.deterministic_mask.sum(-1).tolist(), "kept_weight_sum":
                             self.kept_row_sums.tolist(), "dense_weight_sum": self.dense_weights.sum(-1).tolist()})

    def metrics(self) -> dict:
        sums = self.kept_row_sums
        numbers = {"kept_fraction": self.kept_fraction, "expected_fraction": self.expected_fraction, "row_sum_min":
                   float(sums.min()), "row_sum_mean": float(sums.mean()), "row_sum_max": float(sums.max())}
        return {f"example_{key}": value for key, value in {**numbers, **self.checks()}.items()}

    @property
    def sentence(self) -> str:
        sums, holds = self.kept_row_sums, all(self.checks().values())
        product = "exactly the dense weights times the mask" if holds else "NOT the dense weights times"
        return (f"At b = {SETTING(self.gate_bias)} the deterministic mask keeps {PERCENT_WHOLE(self.kept_fraction)} of "
                f"the causal edges (the regulariser, the mean gate probability, is "
                f"{PERCENT_WHOLE(self.expected_fraction)}). The kept rows sum to between {DECIMAL2(float(sums.min()))} "
                f"and {DECIMAL2(float(sums.max()))} rather than always 1: the weights are not renormalised. The kept "
                f"weights are {product} 1[s + b > 0].")


@dataclass(frozen=True)
class SamplingCheck:
    """How often each causal edge was kept in ``draws`` sampled masks, against its gate probability."""

    draws: int
    gate_probability: np.ndarray  # one value per causal edge
    keep_frequency: np.ndarray

    @property
    def max_abs_error(self) -> float:
        return float(np.abs(self.keep_frequency - self.gate_probability).max())

    @property
    def noise_sd_bound(self) -> float:  # the largest binomial standard deviation of a frequency (at p = 1/2)
        return 0.5 / math.sqrt(self.draws)

    def metrics(self) -> dict:
        return {f"sampling_{key}": getattr(self, key) for key in ("draws", "max_abs_error", "noise_sd_bound")}

    @property
    def sentence(self) -> str:
        ratio = self.max_abs_error / self.noise_sd_bound
        return (f"Over {self.draws} sampled masks the largest gap between an edge's keep frequency and σ(s + b) is "
                f"{DECIMAL4(self.max_abs_error)}, {DECIMAL1(ratio)} times the largest binomial standard deviation: "
                + ("within binomial noise." if ratio < 6 else "further than binomial noise allows."))


@dataclass(frozen=True)
class ModelCheck:
    """A transformers model with gates open (b = +inf) and at ``gate_bias``, against its dense self."""

    description: str
    gate_bias: float
    dense_layer0: torch.Tensor  # [heads, T, T] of the first sequence
    gated_layer0: torch.Tensor  # (the fields below are the recorded numbers, as metrics.json names them)
    open_gates_max_abs_logit_diff: float
    open_gates_max_abs_attention_diff: float
    gated_max_abs_logit_diff: float
    gated_max_abs_attention_diff: float
    gated_kept_fraction_by_layer: list[float]
    gated_kept_fraction: float  # the mean over layers
    gated_row_sum_min: float
    gated_row_sum_mean: float
    gated_row_sum_max: float

    def table(self) -> pd.DataFrame:
        """The comparison as displayed: one column per gate setting."""
        opened = [self.open_gates_max_abs_logit_diff, self.open_gates_max_abs_attention_diff, 1.0]
        gated = [self.gated_max_abs_logit_diff, self.gated_max_abs_attention_diff, self.gated_kept_fraction]
        rows = ["max |logit - dense logit|", "max |attention - dense attention|", "kept edge fraction"]
        return pd.DataFrame({"b = +inf (all gates open)": opened, f"b = {SETTING(self.gate_bias)}": gated}, index=rows)

    def metrics(self) -> dict:
        return {"model": self.description, **{f.name: getattr(self, f.name) for f in fields(self)[4:]}}

    @property
    def sentence(self) -> str:
        same = self.open_gates_max_abs_logit_diff < 1e-5 and self.open_gates_max_abs_attention_diff < 1e-5
        return (f"With every gate open the {self.description} {'computes' if same else 'does NOT compute'} its dense "
                f"logits (largest difference {SCIENTIFIC(self.open_gates_max_abs_logit_diff)}). At b = "
                f"{SETTING(self.gate_bias)} the untrained gates keep {PERCENT_WHOLE(self.gated_kept_fraction)} of the "
                f"edges and move the logits by up to {DECIMAL2(self.gated_max_abs_logit_diff)}: gating alone changes "
                f"the model, which is why the method post-trains it.")


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
    return HeadExample(float(gate_bias), (q, k, v), causal, torch.sigmoid(scores + gate_bias) * causal,
                       (scores + gate_bias > 0) & causal, dense_weights[0, 0], kept_weights[0, 0],
                       sampled_weights[0, 0], stats.kept_fraction, float(stats.expected_fraction))


def sample_masks(example: HeadExample, n_samples: int, seed: int = 0) -> SamplingCheck:
    """Draw ``n_samples`` training masks for the example's head at once and count how often each edge is kept."""
    if n_samples < 1:
        raise ValueError(f"n_samples: need at least one draw, got {n_samples}")
    torch.manual_seed(seed)
    many = [x.expand(n_samples, *x.shape[1:]) for x in example.qkv]
    _, weights, _ = gated_attention(*many, example.causal[None, None], gate_bias=example.gate_bias, sample=True,
                                    compute_stats=False)
    frequency = (weights[:, 0] > 0).double().mean(0)
    return SamplingCheck(draws=n_samples, gate_probability=example.gate_probability[example.causal].double().numpy(),
                         keep_frequency=frequency[example.causal].numpy())


def random_gpt2(layers: int, heads: int, head_dim: int, positions: int, vocab_size: int = 256, seed: int = 0):
    """A randomly initialised GPT-2 (eager attention, eval mode): the mechanism needs no trained weights."""
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
        description, float(gate_bias), dense_out.attentions[0][0], gated_out.attentions[0][0],
        largest_gap([open_out.logits], [dense_out.logits]), largest_gap(open_out.attentions, dense_out.attentions),
        largest_gap([gated_out.logits], [dense_out.logits]), largest_gap(gated_out.attentions, dense_out.attentions),
        kept_by_layer, float(np.mean(kept_by_layer)),
        float(row_sums.min()), float(row_sums.mean()), float(row_sums.max()))


def mechanism_claim(sampling: SamplingCheck, model: ModelCheck) -> Claim:
    """The mechanism row of the claims table, with the verdict of the rule it states."""
    logits, sampled = model.open_gates_max_abs_logit_diff, sampling.max_abs_error
    sentence = (f"open gates (b = +∞) reproduce dense GPT-2 logits to {SCIENTIFIC(logits)}; at b = "
                f"{SETTING(model.gate_bias)} kept-weight rows sum to {DECIMAL2(model.gated_row_sum_min)}–"
                f"{DECIMAL2(model.gated_row_sum_max)} (no renormalisation); sampled keep frequency = σ(s + b) within "
                f"{DECIMAL3(sampled)} over {sampling.draws} draws")
    return Claim("mechanism", sentence, {"open_gates_max_abs_logit_diff": logits, "sampling_max_abs_error": sampled},
                 "reproduced" if logits <= 1e-4 and sampled <= 0.02 else "not reproduced",
                 "reproduced when open gates give the dense logits to 1e-4 and sampled keep frequencies are within "
                 "0.02 of σ(s + b)",
                 headline=f"open gates: logits within {SCIENTIFIC(logits)} of dense; keep frequency within "
                          f"{DECIMAL3(sampled)} of σ(s + b)")
