"""Chapter 4's question: after sparse post-training, do fewer heads carry a behaviour (induction), and what do the
heads' maps look like on the same text? A model with no induction head cannot answer it; the study says so."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from .. import zoo
from ..data.induction import induction_data, induction_scores, random_token_range
from .common import ModelPair, Unavailable, attention_maps, head_name, heads_at_or_above, heldout_blocks, token_labels

__all__ = ["TextAttention", "text_attention", "InductionHeads", "induction_heads", "control_heads",
           "InductionComparison", "compare_induction", "probe_maps", "control_sentence", "induction_claim"]


@dataclass(frozen=True)
class TextAttention:
    """Every head's attention on the first tokens of one held-out block: ``dense`` and ``sparse`` [L, H, T, T]
    (the sparse maps are the kept, not renormalised, weights)."""

    model: str
    tokens: list[str]
    dense: torch.Tensor
    sparse: torch.Tensor

    @property
    def kept_keys_per_query(self) -> torch.Tensor:
        """[L, H]: keys the sparse model keeps per query, averaged over the shown queries."""
        return (self.sparse > 0).sum(-1).float().mean(-1)

    @property
    def dense_keys_per_query(self) -> float:
        """Keys a dense causal head reads per query on this text: (T + 1) / 2 on average."""
        return (len(self.tokens) + 1) / 2

    def kept_table(self) -> pd.DataFrame:
        kept = self.kept_keys_per_query
        return pd.DataFrame(kept.numpy(), index=pd.Index(range(kept.shape[0]), name="layer"),
                            columns=pd.Index(range(kept.shape[1]), name="head"))

    @property
    def sentence(self) -> str:
        kept = self.kept_keys_per_query
        fewest = divmod(int(kept.argmin()), kept.shape[1])
        most = divmod(int(kept.argmax()), kept.shape[1])
        return (f"On these {len(self.tokens)} tokens the sparse {self.model} keeps {float(kept.mean()):.2f} keys per "
                f"query on average, from {float(kept.min()):.2f} ({head_name(*fewest)}) to {float(kept.max()):.2f} "
                f"({head_name(*most)}); a dense head reads all {self.dense_keys_per_query:.1f} on average.")


def text_attention(pair: ModelPair, text_block: int, text_tokens: int) -> TextAttention:
    """The maps of both models on the first ``text_tokens`` tokens of held-out block ``text_block``."""
    _, heldout = heldout_blocks(pair.dense, max_blocks=text_block + 1, block_size=max(text_tokens, 16), spread=False)
    if text_block >= len(heldout["input_ids"]):
        raise ValueError(f"text_block: the held-out data has {len(heldout['input_ids'])} blocks")
    ids = heldout["input_ids"][text_block, :text_tokens][None]
    return TextAttention(pair.name, token_labels(pair.dense.tokenizer, ids[0]),
                         attention_maps(pair.dense.model, ids)[0], attention_maps(pair.sparse.model, ids)[0])


@dataclass(frozen=True)
class InductionHeads:
    """Induction scores [L, H] of one model on the probe (mean weight on the token after the previous occurrence
    of the current token) and the heads at or above ``threshold``."""

    model: str
    scores: torch.Tensor
    threshold: float

    @property
    def heads(self) -> list[tuple[int, int]]:
        return heads_at_or_above(self.scores, self.threshold)

    @property
    def max_score(self) -> float:
        return float(self.scores.max())

    @property
    def n_heads(self) -> int:
        return self.scores.numel()

    def to_metrics(self) -> dict:
        return {"model": self.model, "heads": [list(h) for h in self.heads], "max_score": self.max_score,
                "n_heads": self.n_heads, "threshold": self.threshold}


def _probe(loaded, n_sequences: int, half: int, seed: int) -> dict:
    vocab = loaded.model.config.vocab_size
    low, bos = random_token_range(loaded.tokenizer, vocab)
    return induction_data(n_sequences, half, vocab, seed=seed, low=low, bos_token_id=bos)


def induction_heads(loaded, probe: dict, threshold: float) -> InductionHeads:
    return InductionHeads(loaded.name, induction_scores(loaded.model, probe), threshold)


def control_heads(name: str, n_sequences: int, half: int, threshold: float, seed: int) -> InductionHeads | Unavailable:
    """The dense positive control: a pretrained model expected to have induction heads, on the same probe."""
    try:
        loaded = zoo.load(name, progress=False)
    except (zoo.HubUnavailableError, FileNotFoundError) as error:
        return Unavailable(name, str(error).splitlines()[0])
    return induction_heads(loaded, _probe(loaded, n_sequences, half, seed), threshold)


@dataclass(frozen=True)
class InductionComparison:
    """Induction heads of the dense model and its sparse copy on the same probe, and the positive control's."""

    model: str
    dense: InductionHeads
    sparse: InductionHeads
    probe_ids: torch.Tensor

    @property
    def testable(self) -> bool:
        """The claim (fewer heads carry induction after sparsification) needs a dense model with induction heads."""
        return bool(self.dense.heads)

    def scores_table(self) -> pd.DataFrame:
        layers, heads = self.dense.scores.shape
        return pd.DataFrame({"layer": [l for l in range(layers) for _ in range(heads)],
                             "head": [h for _ in range(layers) for h in range(heads)],
                             "dense_score": self.dense.scores.flatten().numpy(),
                             "sparse_score": self.sparse.scores.flatten().numpy()})

    def shown_heads(self, limit: int = 8) -> list[tuple[int, int]]:
        """Heads above the threshold in either model, strongest first, or the four highest-scoring ones."""
        ranked = heads_at_or_above(torch.maximum(self.dense.scores, self.sparse.scores), float("-inf"))
        above = set(self.dense.heads) | set(self.sparse.heads)
        return [h for h in ranked if h in above][:limit] or ranked[:4]

    @property
    def sentence(self) -> str:
        d, s = self.dense, self.sparse
        if not self.testable:
            head = (f"The dense {self.model} has no induction head: its highest score is {d.max_score:.3f}, below the "
                    f"threshold {d.threshold:g}. This model cannot test the paper's claim, so this is a negative "
                    f"result about the model, not evidence for or against the claim (the sparse copy has "
                    f"{len(s.heads)} head(s) above the threshold).")
        else:
            head = (f"The dense {self.model} has {len(d.heads)} of {d.n_heads} heads at or above {d.threshold:g} "
                    f"({', '.join(head_name(*h) for h in d.heads)}); the sparse copy has {len(s.heads)}"
                    + (f" ({', '.join(head_name(*h) for h in s.heads)})." if s.heads else "."))
        return head

    def to_metrics(self) -> dict:
        return {"testable": self.testable, "dense": self.dense.to_metrics(), "sparse": self.sparse.to_metrics()}


def compare_induction(pair: ModelPair, n_sequences: int, half: int, threshold: float, seed: int) -> InductionComparison:
    """Both models on one probe of ``n_sequences`` sequences of ``half`` random tokens repeated once."""
    probe = _probe(pair.dense, n_sequences, half, seed)
    return InductionComparison(pair.name, induction_heads(pair.dense, probe, threshold),
                               induction_heads(pair.sparse, probe, threshold), probe["input_ids"])


def probe_maps(pair: ModelPair, comparison: InductionComparison, heads: list[tuple[int, int]]) -> torch.Tensor:
    """[2, k, T, T]: the listed heads' attention on the first probe sequence, dense then sparse."""
    ids = comparison.probe_ids[:1]
    maps = [attention_maps(loaded.model, ids)[0] for loaded in (pair.dense, pair.sparse)]
    return torch.stack([torch.stack([m[layer, head] for layer, head in heads]) for m in maps])


def control_sentence(control: InductionHeads | Unavailable | None) -> str:
    """What the positive control shows: that the probe finds induction heads where they exist (or why not here)."""
    if control is None:
        return "No positive control was probed in this run."
    if isinstance(control, Unavailable):
        return f"The positive control {control.sentence}"
    return (f"The positive control, dense {control.model}, has {len(control.heads)} of {control.n_heads} heads at or "
            f"above {control.threshold:g} (highest {control.max_score:.2f})"
            + (", so the probe finds induction heads where they exist." if control.heads else
               ": the probe found none there either, so a count of zero above says little about the small model."))


def induction_claim(comparison: InductionComparison | Unavailable, control: InductionHeads | Unavailable | None) -> str:
    """The claims table's line: head counts dense vs sparse, whether the model can test the claim, the control."""
    if isinstance(comparison, Unavailable):
        summary = f"{comparison.model}: pending, not measured here ({comparison.reason.split(': ')[0]})"
    else:
        d, s = comparison.dense, comparison.sparse
        summary = (f"{comparison.model}: {len(d.heads)} of {d.n_heads} heads with induction score ≥ {d.threshold:g} "
                   f"dense (max {d.max_score:.2f}) vs {len(s.heads)} sparse (max {s.max_score:.2f})")
        if not comparison.testable:
            summary += "; the dense model has no induction head, so it cannot test the claim"
    if isinstance(control, InductionHeads):
        summary += f"; positive control {control.model} (dense): {len(control.heads)} of {control.n_heads} heads"
    return summary
