"""Chapter 4's question: after sparse post-training, do fewer heads carry a behaviour (induction), and what do the
heads' maps look like on the same text? A model with no induction head cannot answer it; the study says so."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from .. import zoo
from ..data.induction import induction_data, induction_scores, random_token_range
from .common import ModelPair, Unavailable, attention_maps, head_name, heads_at_or_above, heldout_blocks, token_labels
from ..formatting import PERCENT
from .seeds import Spread, spread

__all__ = ["TextAttention", "text_attention", "InductionHeads", "induction_heads", "control_heads",
           "InductionComparison", "compare_induction", "probe_maps", "control_sentence", "contrast_sentence",
           "heldout_induction", "heldout_induction_sentence",
           "SeedRun", "seed_run", "AttentionSeeds", "attention_seeds", "induction_claim"]


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
    return (f"The positive control, dense {control.model} (pretrained elsewhere and not trained here, so one model "
            f"and no training seeds), has {len(control.heads)} of {control.n_heads} heads at or "
            f"above {control.threshold:g} (highest {control.max_score:.2f})"
            + (", so the probe finds induction heads where they exist." if control.heads else
               ": the probe found none there either, so a count of zero above says little about the small model."))


def heldout_induction(pair: ModelPair, n_blocks: int, threshold: float) -> tuple[str, dict[str, InductionHeads]]:
    """(data name, induction heads of the dense and the sparse model) scored on held-out blocks of the model's own
    data rather than the random probe: there a query's target is the token after the previous occurrence of its
    token, wherever the text repeats one. A head that is an induction head on the probe only would score low here."""
    name, blocks = heldout_blocks(pair.dense, max_blocks=n_blocks, block_size=64)
    blocks = {"input_ids": blocks["input_ids"]}
    return name, {label: induction_heads(loaded, blocks, threshold)
                  for label, loaded in (("dense", pair.dense), ("sparse", pair.sparse))}


def heldout_induction_sentence(name: str, scores: dict[str, InductionHeads]) -> str:
    parts = [f"{label} {len(found.heads)} of {found.n_heads} heads at or above {found.threshold:g} (highest "
             f"{found.max_score:.2f})" for label, found in scores.items()]
    return f"On {name}, scored wherever a token repeats an earlier one: {'; '.join(parts)}."


def contrast_sentence(contrast: InductionHeads | Unavailable | None) -> str:
    """What the probe finds in a natural-language toy trained here (seed 0), the model this chapter does not use."""
    if contrast is None:
        return "No natural-language toy was probed for contrast in this run."
    if isinstance(contrast, Unavailable):
        return f"The contrast model {contrast.sentence}"
    found = (f"{len(contrast.heads)} of its {contrast.n_heads} heads reach {contrast.threshold:g}" if contrast.heads
             else f"none of its {contrast.n_heads} heads reaches {contrast.threshold:g}")
    return (f"The dense {contrast.model} (training seed 0), on the same probe: highest score "
            f"{contrast.max_score:.3f}; {found}"
            + (", so on it this chapter's claim could not be tested." if not contrast.heads else "."))


# ------------------------------------------------------------------------------------------ over training seeds


@dataclass(frozen=True)
class SeedRun:
    """What one training seed's pair gives: its held-out metrics (``dense_heldout_ce``, ``sparse_heldout_ce``,
    ``kept_fraction``, ``kept_per_query``), its maps on the held-out text and its induction probe."""

    seed: int
    metrics: dict
    text: TextAttention
    induction: InductionComparison

    def row(self) -> dict:
        """The seed's headline numbers, one flat row (the names :meth:`AttentionSeeds.spreads` uses)."""
        d, s = self.induction.dense, self.induction.sparse
        return {"seed": self.seed, **self.metrics,
                "text_kept_keys_per_query": float(self.text.kept_keys_per_query.mean()),
                "dense_max_score": d.max_score, "sparse_max_score": s.max_score,
                "dense_induction_heads": len(d.heads), "sparse_induction_heads": len(s.heads),
                "testable": self.induction.testable, "fewer_sparse_heads": len(s.heads) < len(d.heads)}


def seed_run(pair: ModelPair, seed: int, text_block: int, text_tokens: int, n_sequences: int, half: int,
             threshold: float, probe_seed: int) -> SeedRun:
    """One training seed's measurements; the probe (``probe_seed``) is the same for every training seed."""
    metrics = {"dense_heldout_ce": pair.before.ce, "sparse_heldout_ce": pair.after.ce,
               "kept_fraction": pair.after.kept_fraction, "kept_per_query": pair.after.kept_per_query}
    return SeedRun(seed, metrics, text_attention(pair, text_block, text_tokens),
                   compare_induction(pair, n_sequences, half, threshold, probe_seed))


def _seed_list(seeds: Sequence[int]) -> str:
    return ", ".join(str(s) for s in seeds)


@dataclass(frozen=True)
class AttentionSeeds:
    """The chapter's measurements for every training seed (``runs``, in the order of ``train_seeds``) and the first
    seed's models (``first_pair``), whose maps the figures draw."""

    model: str
    runs: tuple
    first_pair: ModelPair | None = None

    def __post_init__(self):
        if not self.runs:
            raise ValueError("runs: need at least one training seed")

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    @property
    def first(self) -> SeedRun:
        return self.runs[0]

    @property
    def threshold(self) -> float:
        return self.first.induction.dense.threshold

    @property
    def n_heads(self) -> int:
        return self.first.induction.dense.n_heads

    def per_seed(self) -> pd.DataFrame:
        """One row per training seed: held-out CE, kept edges, kept keys on the text, induction headline."""
        return pd.DataFrame([run.row() for run in self.runs])

    def scores_table(self) -> pd.DataFrame:
        """Every head's induction score, dense and sparse, for every seed (a ``seed`` column first)."""
        return pd.concat([run.induction.scores_table().assign(seed=run.seed) for run in self.runs],
                         ignore_index=True)[["seed", "layer", "head", "dense_score", "sparse_score"]]

    def kept_table(self) -> pd.DataFrame:
        """Kept keys per query on the text, per seed, layer and head."""
        rows = [{"seed": run.seed, "layer": layer, "head": head, "kept_keys_per_query": float(value)}
                for run in self.runs for (layer, head), value in
                ((divmod(i, run.text.kept_keys_per_query.shape[1]), v)
                 for i, v in enumerate(run.text.kept_keys_per_query.flatten().tolist()))]
        return pd.DataFrame(rows)

    def induction_table(self) -> pd.DataFrame:
        """Per seed: the highest scores, the heads at or above the threshold (named) and whether the seed's dense
        model can test the claim."""
        rows = []
        for run in self.runs:
            d, s = run.induction.dense, run.induction.sparse
            rows.append({"seed": run.seed, "dense_max_score": d.max_score, "sparse_max_score": s.max_score,
                         "dense_heads": len(d.heads), "sparse_heads": len(s.heads),
                         "dense_named": ", ".join(head_name(*h) for h in d.heads) or "none",
                         "sparse_named": ", ".join(head_name(*h) for h in s.heads) or "none",
                         "testable": run.induction.testable})
        return pd.DataFrame(rows)

    _SPREADS = ("dense_heldout_ce", "sparse_heldout_ce", "kept_fraction", "kept_per_query",
                "text_kept_keys_per_query", "dense_max_score", "sparse_max_score", "dense_induction_heads",
                "sparse_induction_heads")

    def spreads(self) -> dict[str, Spread]:
        """Each headline number over the training seeds (mean, min, max, n)."""
        frame = self.per_seed()
        return {name: spread(frame[name]) for name in self._SPREADS}

    @property
    def testable_seeds(self) -> list[int]:
        return [run.seed for run in self.runs if run.induction.testable]

    @property
    def fewer_seeds(self) -> list[int]:
        """Seeds whose dense model has induction heads and whose sparse copy has fewer: the claim holds there."""
        return [run.seed for run in self.runs if run.induction.testable and run.row()["fewer_sparse_heads"]]

    @property
    def models_sentence(self) -> str:
        sp, n = self.spreads(), len(self.runs)
        return (f"Over {n} training seed{'s' if n > 1 else ''} of {self.model}, the held-out CE is "
                f"{sp['dense_heldout_ce'].text(_three)} dense and {sp['sparse_heldout_ce'].text(_three)} sparse. The "
                f"sparse copies keep {sp['kept_fraction'].text(PERCENT)} of causal attention edges, or "
                f"{sp['kept_per_query'].text(_two)} keys per query.")

    @property
    def text_sentence(self) -> str:
        sp, first = self.spreads(), self.first
        return (f"Seed {first.seed} (the maps above): {first.text.sentence} Over every seed, a sparse head keeps "
                f"{sp['text_kept_keys_per_query'].text(_two)} keys per query on this text on average.")

    @property
    def induction_sentence(self) -> str:
        sp, n, threshold = self.spreads(), len(self.runs), self.threshold
        testable = self.testable_seeds
        sparse_part = (f"at or above the threshold the sparse copies have {_heads(sp['sparse_induction_heads'])}, and "
                       f"their highest score is {sp['sparse_max_score'].text(_three)}")
        if not testable:
            return (f"The dense {self.model} has no induction head in any of {n} seed{'s' if n > 1 else ''}: no "
                    f"head reaches {threshold:g}, and the highest score is {sp['dense_max_score'].text(_three)}. "
                    f"This model cannot test the paper's claim, so this is a negative result about the model, not "
                    f"evidence for or against the claim; {sparse_part}.")
        named = "; ".join(f"seed {row.seed}: {row.dense_named} dense, {row.sparse_named} sparse"
                          for row in self.induction_table().itertuples())
        head = (f"At or above {threshold:g}, the dense {self.model} has {_heads(sp['dense_induction_heads'])} of "
                f"{self.n_heads}, and its highest score is {sp['dense_max_score'].text(_three)}; {sparse_part}. The "
                f"sparse copy has fewer in {len(self.fewer_seeds)} of the {len(testable)} seed(s) with a dense "
                f"induction head. Per seed: {named}.")
        if len(testable) < n:
            missing = [s for s in self.seeds if s not in testable]
            head += (f" Seed{'s' if len(missing) > 1 else ''} {_seed_list(missing)} cannot test the claim: "
                     f"{'their dense models have' if len(missing) > 1 else 'its dense model has'} no induction head.")
        return head

    def to_metrics(self) -> dict:
        per_seed = []
        for run, row in zip(self.runs, self.per_seed().to_dict(orient="records")):
            per_seed.append({**row, "text": {"tokens": run.text.tokens,
                                             "kept_keys_per_query": run.text.kept_keys_per_query.tolist(),
                                             "dense_keys_per_query": run.text.dense_keys_per_query},
                             "induction": run.induction.to_metrics()})
        return {"model": self.model, "seeds": self.seeds, "per_seed": per_seed,
                "spreads": {name: s.to_dict() for name, s in self.spreads().items()},
                "testable_seeds": self.testable_seeds, "fewer_sparse_heads_seeds": self.fewer_seeds,
                "threshold": self.threshold}


def _two(value: float) -> str:
    return f"{value:.2f}"


def _three(value: float) -> str:
    return f"{value:.3f}"


def _count(value: float) -> str:
    return f"{value:.3g}"


def _heads(count: Spread) -> str:
    """A count of heads over seeds: "no head in any seed", "2 heads in every seed", or the spread."""
    if count.low == count.high:
        return "no head in any seed" if count.low == 0 else f"{count.low:g} head(s) in every seed"
    return f"{count.text(_count)} heads"


def _inline(value: Spread, fmt) -> str:
    """A spread inside parentheses: "0.04, 0.03–0.05 over 3 seeds" (no nested brackets)."""
    if value.n == 1:
        return f"{fmt(value.mean)}, 1 seed"
    return f"{fmt(value.mean)}, {fmt(value.low)}–{fmt(value.high)} over {value.n} {value.over}"


def attention_seeds(model: str, train_seeds: Sequence[int], load: Callable[[int], "ModelPair | Unavailable"], *,
                    text_block: int, text_tokens: int, n_sequences: int, half: int, threshold: float,
                    probe_seed: int) -> AttentionSeeds | Unavailable:
    """Load each training seed's pair with ``load(seed)`` (``common.load_pair``) and measure it; only the first
    seed's models are kept (for the maps). A model that cannot be loaded makes the whole study pending."""
    runs, first = [], None
    for seed in train_seeds:
        pair = load(seed)
        if isinstance(pair, Unavailable):
            return pair
        runs.append(seed_run(pair, seed, text_block, text_tokens, n_sequences, half, threshold, probe_seed))
        first = pair if first is None else first
    return AttentionSeeds(model, tuple(runs), first)


def induction_claim(study: AttentionSeeds | Unavailable, control: InductionHeads | Unavailable | None) -> str:
    """The claims table's line: head counts dense vs sparse over the training seeds, whether the model can test
    the claim in each, and the positive control (one pretrained model, no seeds)."""
    if isinstance(study, Unavailable):
        summary = f"{study.model}: pending, not measured here ({study.reason.split(': ')[0]})"
    else:
        sp, n, threshold = study.spreads(), len(study.runs), study.threshold
        sparse = (f"sparse copies: {_heads(sp['sparse_induction_heads'])} (highest "
                  f"{_inline(sp['sparse_max_score'], _three)})")
        if not study.testable_seeds:
            summary = (f"{study.model}: no dense head reaches induction score {threshold:g} in any of {n} seeds "
                       f"(highest {_inline(sp['dense_max_score'], _three)}), so it cannot test the claim; {sparse}")
        else:
            summary = (f"{study.model}: heads (of {study.n_heads}) with induction score ≥ {threshold:g}, dense: "
                       f"{_heads(sp['dense_induction_heads'])} (highest {_inline(sp['dense_max_score'], _three)}); "
                       f"{sparse}; fewer sparse heads in {len(study.fewer_seeds)} of {len(study.testable_seeds)} "
                       f"seeds with dense induction heads")
            if len(study.testable_seeds) < n:
                summary += f" ({n - len(study.testable_seeds)} of {n} seeds have none and cannot test it)"
    if isinstance(control, InductionHeads):
        summary += (f"; positive control {control.model} (dense, not trained here: no seeds): {len(control.heads)} "
                    f"of {control.n_heads} heads")
    return summary
