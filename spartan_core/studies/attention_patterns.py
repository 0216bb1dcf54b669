"""Chapter 4's question: after sparse post-training, do fewer heads carry a behaviour (induction), and what do the
heads' maps look like on the same text? A model with no induction head cannot answer it; the study says so."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .. import zoo
from .._util import model_device
from ..circuits.heads import effective_heads, head_ablation_effects, heads_above
from ..claims import Claim
from ..data.induction import induction_data, induction_scores, random_token_range
from ..formatting import COUNT, DECIMAL1, DECIMAL2, DECIMAL3, PERCENT, SIGNIFICANT, counted, seed_list
from ..mechanism.attention import attention_maps, heads_at_or_above
from ..training.evaluate import HeldOut
from .common import ModelPair, Unavailable, head_name, heldout_blocks, token_labels
from .seeds import Seeds, Spread

__all__ = ["TextAttention", "InductionHeads", "SeedRun", "attention_seeds", "text_attention", "control_heads",
           "heldout_induction", "probe_maps", "induction_table", "models_sentence", "text_sentence",
           "induction_sentence", "control_sentence", "contrast_sentence", "seeds_metrics", "HEADLINES",
           "INDUCTION_RULE", "induction_claim"]


def _by_head(**maps: torch.Tensor) -> pd.DataFrame:
    layers, heads = next(iter(maps.values())).shape
    return pd.DataFrame({"layer": np.repeat(np.arange(layers), heads), "head": np.tile(np.arange(heads), layers),
                         **{name: values.flatten().numpy() for name, values in maps.items()}})


@dataclass(frozen=True)
class TextAttention:
    """Every head's attention on a held-out text, ``dense`` and ``sparse`` [L, H, T, T] (kept, not renormalised)."""

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
        """Kept keys per query, one row per head."""
        return _by_head(kept_keys_per_query=self.kept_keys_per_query.double())


def text_attention(pair: ModelPair, text_block: int, text_tokens: int) -> TextAttention:
    """The maps of both models on the first ``text_tokens`` tokens of held-out block ``text_block``."""
    _, heldout = heldout_blocks(pair.dense, max_blocks=text_block + 1, block_size=max(text_tokens, 16), spread=False)
    if text_block >= len(heldout["input_ids"]):
        raise ValueError(f"text_block: the held-out data has {len(heldout['input_ids'])} blocks")
    ids = heldout["input_ids"][text_block, :text_tokens][None]
    return TextAttention(pair.name, token_labels(pair.dense.tokenizer, ids[0]),
                         attention_maps(pair.dense.model, ids)[0], attention_maps(pair.sparse.model, ids)[0])


# A head "carries" induction, without a threshold on its score, when mean-ablating it alone raises the loss on the
# probe's repeated half by more than this many nats.
ABLATION_NATS = 0.1
# One evaluation per head: a model with more heads than this is not ablated head by head on a CPU. SmolLM2-135M's 270
# heads ran for more than 12 minutes on 2 cores without finishing, against seconds for the toys' 8-16 heads.
MAX_ABLATED_HEADS_CPU = 64


@dataclass(frozen=True)
class InductionHeads:
    """One model's induction scores [L, H] (mean weight on the key after the query token's previous occurrence) and,
    where the probe has labels, each head's ``ablation`` effect [L, H]: the rise in the repeated half's CE when that
    head alone is mean-ablated (:func:`~spartan_core.circuits.heads.head_ablation_effects`)."""

    model: str
    scores: torch.Tensor
    threshold: float
    ablation: torch.Tensor | None = None

    @property
    def heads(self) -> list[tuple[int, int]]:
        return heads_at_or_above(self.scores, self.threshold)

    @property
    def max_score(self) -> float:
        return float(self.scores.max())

    @property
    def n_heads(self) -> int:
        return self.scores.numel()

    @property
    def effective(self) -> float:
        """The effective number of induction heads, (Σs)²/Σs² over every head's score: no threshold."""
        return effective_heads(self.scores)

    @property
    def critical(self) -> int | None:
        """Heads whose ablation raises the repeated half's CE by more than :data:`ABLATION_NATS` (None: not ablated)."""
        return None if self.ablation is None else heads_above(self.ablation, ABLATION_NATS)

    def threshold_free(self) -> str:
        """The two threshold-free measures, as a phrase."""
        critical = "" if self.critical is None else (
            f", and {counted(self.critical, 'head')} whose ablation alone raises the repeated half's CE by more "
            f"than {DECIMAL1(ABLATION_NATS)} nats")
        skipped = "" if self.ablation is not None or self.n_heads <= MAX_ABLATED_HEADS_CPU else (
            f" (its {self.n_heads} heads are not ablated one by one on a CPU: one evaluation each)")
        return f"an effective number of induction heads of {DECIMAL1(self.effective)}{critical}{skipped}"

    def found(self) -> str:
        return (f"{len(self.heads)} of {self.n_heads} heads at or above {SIGNIFICANT(self.threshold)} (highest "
                f"{DECIMAL2(self.max_score)})")

    def to_metrics(self) -> dict:
        ablation = {} if self.ablation is None else {"ablation": self.ablation.tolist(), "critical": self.critical,
                                                     "ablation_nats": ABLATION_NATS}
        return {"model": self.model, "heads": [list(h) for h in self.heads], "max_score": self.max_score,
                "n_heads": self.n_heads, "threshold": self.threshold, "effective": self.effective, **ablation}


def _named(heads: list[tuple[int, int]]) -> str:
    return ", ".join(head_name(*h) for h in heads) or "none"


def _scored(loaded, probe: dict, threshold: float) -> InductionHeads:
    """Scores, and each head's ablation effect where ``probe`` has labels (the repeated half) and the model is small
    enough, or on an accelerator (:data:`MAX_ABLATED_HEADS_CPU`)."""
    scores = induction_scores(loaded.model, probe)
    affordable = scores.numel() <= MAX_ABLATED_HEADS_CPU or model_device(loaded.model).type != "cpu"
    ablation = head_ablation_effects(loaded.model, probe, batch_size=8) if "labels" in probe and affordable else None
    return InductionHeads(loaded.name, scores, threshold, ablation)


def _probe(loaded, n_sequences: int, half: int, seed: int) -> dict:
    low, bos = random_token_range(loaded.tokenizer, loaded.model.config.vocab_size)
    return induction_data(n_sequences, half, loaded.model.config.vocab_size, seed=seed, low=low, bos_token_id=bos)


def control_heads(name: str, n_sequences: int, half: int, threshold: float, seed: int) -> InductionHeads | Unavailable:
    """A dense model not post-trained here (the positive control, or the contrast) on the same probe."""
    try:
        loaded = zoo.load(name, progress=False)
    except (zoo.HubUnavailableError, FileNotFoundError) as error:
        return Unavailable(name, str(error).splitlines()[0])
    return _scored(loaded, _probe(loaded, n_sequences, half, seed), threshold)


def probe_maps(pair: ModelPair, run: SeedRun, heads: list[tuple[int, int]]) -> torch.Tensor:
    """[2, k, T, T]: the listed heads' attention on the seed's first probe sequence, dense then sparse."""
    maps = [attention_maps(loaded.model, run.probe_ids[:1])[0] for loaded in (pair.dense, pair.sparse)]
    return torch.stack([torch.stack([m[layer, head] for layer, head in heads]) for m in maps])


def heldout_induction(pair: ModelPair, n_blocks: int, threshold: float) -> tuple[str, dict[str, InductionHeads]]:
    """(sentence, induction heads of both models) scored on held-out blocks of the model's own data, where a
    query's target is the token after the previous occurrence of its token wherever the text repeats one."""
    name, blocks = heldout_blocks(pair.dense, max_blocks=n_blocks, block_size=64)
    scores = {label: _scored(loaded, {"input_ids": blocks["input_ids"]}, threshold)
              for label, loaded in (("dense", pair.dense), ("sparse", pair.sparse))}
    parts = "; ".join(f"{label} {found.found()}" for label, found in scores.items())
    return f"On {name}, scored wherever a token repeats an earlier one: {parts}.", scores


def control_sentence(control: InductionHeads | Unavailable | None) -> str:
    """What the positive control shows: that the probe finds induction heads where they exist (or why not here)."""
    if not isinstance(control, InductionHeads):
        return f"The positive control {control.sentence}" if control else "No positive control was probed in this run."
    return (f"The positive control, dense {control.model} (pretrained elsewhere and not trained here, so one model "
            f"and no training seeds), has {control.found()}, {control.threshold_free()}"
            + (", so the probe finds induction heads where they exist." if control.heads else
               ": the probe found none there either, so a count of zero above says little about the small model."))


def contrast_sentence(contrast: InductionHeads | Unavailable | None) -> str:
    """What the probe finds in a natural-language toy trained here (seed 0), the model this chapter does not use."""
    if not isinstance(contrast, InductionHeads):
        return (f"The contrast model {contrast.sentence}" if contrast
                else "No natural-language toy was probed for contrast in this run.")
    n, threshold = contrast.n_heads, SIGNIFICANT(contrast.threshold)
    found = (f"{len(contrast.heads)} of its {n} heads reach {threshold}." if contrast.heads else
             f"none of its {n} heads reaches {threshold}, so on it this chapter's claim could not be tested.")
    return (f"The dense {contrast.model} (training seed 0), on the same probe: highest score "
            f"{DECIMAL3(contrast.max_score)}, {contrast.threshold_free()}; {found}")


@dataclass(frozen=True)
class SeedRun:
    """One seed's pair: held-out numbers (``before`` dense, ``after`` sparse), maps on the text, probe heads."""

    seed: int
    before: HeldOut
    after: HeldOut
    text: TextAttention
    dense: InductionHeads
    sparse: InductionHeads
    probe_ids: torch.Tensor

    @property
    def testable(self) -> bool:
        """The claim (fewer heads carry induction after sparsification) needs a dense model with induction heads."""
        return bool(self.dense.heads)

    def shown_heads(self, limit: int = 8) -> list[tuple[int, int]]:
        """Heads above the threshold in either model, strongest first, or the four highest-scoring ones."""
        ranked = heads_at_or_above(torch.maximum(self.dense.scores, self.sparse.scores), float("-inf"))
        above = set(self.dense.heads) | set(self.sparse.heads)
        return [h for h in ranked if h in above][:limit] or ranked[:4]

    def scores_table(self) -> pd.DataFrame:
        return _by_head(dense_score=self.dense.scores, sparse_score=self.sparse.scores)

    def row(self) -> dict:
        d, s = self.dense, self.sparse
        return {"dense_heldout_ce": self.before.ce, "sparse_heldout_ce": self.after.ce,
                "kept_fraction": self.after.kept_fraction, "kept_per_query": self.after.kept_per_query,
                "text_kept_keys_per_query": float(self.text.kept_keys_per_query.mean()),
                "dense_max_score": d.max_score, "sparse_max_score": s.max_score,
                "dense_induction_heads": len(d.heads), "sparse_induction_heads": len(s.heads),
                "dense_effective_heads": d.effective, "sparse_effective_heads": s.effective,
                "dense_critical_heads": d.critical, "sparse_critical_heads": s.critical,
                "testable": self.testable, "fewer_sparse_heads": len(s.heads) < len(d.heads)}


HEADLINES = ("dense_heldout_ce", "sparse_heldout_ce", "kept_fraction", "kept_per_query", "text_kept_keys_per_query",
             "dense_max_score", "sparse_max_score", "dense_induction_heads", "sparse_induction_heads",
             "dense_effective_heads", "sparse_effective_heads", "dense_critical_heads", "sparse_critical_heads")


def attention_seeds(train_seeds: Sequence[int], load: Callable[[int], ModelPair | Unavailable], *, text_block: int,
                    text_tokens: int, n_sequences: int, half: int, threshold: float,
                    probe_seed: int) -> tuple[Seeds[SeedRun], ModelPair] | Unavailable:
    """(every seed's measurements, the first seed's pair for the maps), or the pair ``load(seed)`` could not load:
    maps on the first ``text_tokens`` tokens of held-out block ``text_block``, and heads scoring ≥ ``threshold`` on
    ``n_sequences`` sequences of ``half`` random tokens repeated once (``probe_seed``, the same for every seed)."""
    runs, first = [], None
    for seed in train_seeds:
        pair = load(seed)
        if isinstance(pair, Unavailable):
            return pair
        probe = _probe(pair.dense, n_sequences, half, probe_seed)
        runs.append(SeedRun(seed, pair.before, pair.after, text_attention(pair, text_block, text_tokens),
                            _scored(pair.dense, probe, threshold), _scored(pair.sparse, probe, threshold),
                            probe["input_ids"]))
        first = first or pair
    return Seeds(tuple(runs)), first


def induction_table(runs: Seeds[SeedRun]) -> pd.DataFrame:
    """Per seed: the highest scores, the heads at or above the threshold (named), the threshold-free measures
    (effective number of heads, heads whose ablation costs more than :data:`ABLATION_NATS`), whether it can test
    the claim."""
    return pd.DataFrame([{"seed": r.seed, "dense_max_score": r.dense.max_score, "sparse_max_score": r.sparse.max_score,
                          "dense_heads": len(r.dense.heads), "sparse_heads": len(r.sparse.heads),
                          "dense_effective": r.dense.effective, "sparse_effective": r.sparse.effective,
                          "dense_critical": r.dense.critical, "sparse_critical": r.sparse.critical,
                          "dense_named": _named(r.dense.heads), "sparse_named": _named(r.sparse.heads),
                          "testable": r.testable} for r in runs.runs])


def _heads(count: Spread) -> str:
    """A count of heads over seeds: "no head in any seed", "2 head(s) in every seed", or the spread."""
    if count.low == count.high:
        return "no head in any seed" if count.low == 0 else f"{COUNT(count.low)} head(s) in every seed"
    return f"{count.text(COUNT)} heads"


def models_sentence(runs: Seeds[SeedRun]) -> str:
    sp = runs.spreads(HEADLINES)
    return (f"Over {counted(len(runs), 'training seed')} of {runs.first.dense.model}, the held-out CE is "
            f"{sp['dense_heldout_ce'].text(DECIMAL3)} dense and {sp['sparse_heldout_ce'].text(DECIMAL3)} sparse. The "
            f"sparse copies keep {sp['kept_fraction'].text(PERCENT)} of causal attention edges, or "
            f"{sp['kept_per_query'].text(DECIMAL2)} keys per query.")


def text_sentence(runs: Seeds[SeedRun]) -> str:
    """The first seed's kept keys per query on the text (the maps shown), and their mean over every seed."""
    text = runs.first.text
    kept = text.kept_keys_per_query
    fewest, most = (divmod(int(i), kept.shape[1]) for i in (kept.argmin(), kept.argmax()))
    return (f"Seed {runs.first.seed} (the maps above): On these {len(text.tokens)} tokens the sparse {text.model} "
            f"keeps {DECIMAL2(float(kept.mean()))} keys per query on average, from {DECIMAL2(float(kept.min()))} "
            f"({head_name(*fewest)}) to {DECIMAL2(float(kept.max()))} ({head_name(*most)}); a dense head reads all "
            f"{DECIMAL1(text.dense_keys_per_query)} on average. Over every seed, a sparse head keeps "
            f"{runs.spread('text_kept_keys_per_query').text(DECIMAL2)} keys per query on this text on average.")


def _threshold_free_sentence(runs: Seeds[SeedRun]) -> str:
    sp = runs.spreads(HEADLINES)

    def measures(kind: str) -> str:
        effective = f"an effective number of induction heads of {sp[f'{kind}_effective_heads'].summary(DECIMAL1)}"
        critical = sp.get(f"{kind}_critical_heads")
        return effective if critical is None else (
            f"{effective} and {critical.summary(COUNT)} head(s) whose ablation alone raises the repeated half's CE "
            f"by more than {DECIMAL1(ABLATION_NATS)} nats")

    return (f" Without a threshold, the dense copies have {measures('dense')}; the sparse copies have "
            f"{measures('sparse')}.")


def induction_sentence(runs: Seeds[SeedRun], per_seed: bool = True) -> str:
    """Head counts and highest scores over the seeds, the seeds that can test the claim, (``per_seed``) the heads."""
    sp, first, testable = runs.spreads(HEADLINES), runs.first.dense, runs.where(lambda r: r.testable)
    threshold, fewer = SIGNIFICANT(first.threshold), runs.where(lambda r: r.row()["fewer_sparse_heads"])
    sparse = (f"at or above the threshold the sparse copies have {_heads(sp['sparse_induction_heads'])}, and their "
              f"highest score is {sp['sparse_max_score'].text(DECIMAL3)}")
    if not testable:
        return (f"The dense {first.model} has no induction head in any of {counted(len(runs), 'seed')}: no head "
                f"reaches {threshold}, and the highest score is {sp['dense_max_score'].text(DECIMAL3)}. This model "
                f"cannot test the paper's claim, so this is a negative result about the model, not evidence for or "
                f"against the claim; {sparse}." + _threshold_free_sentence(runs))
    found = (f"At or above {threshold}, the dense {first.model} has {_heads(sp['dense_induction_heads'])} of "
             f"{first.n_heads}, and its highest score is {sp['dense_max_score'].text(DECIMAL3)}; {sparse}. The sparse "
             f"copy has fewer in {len(fewer)} of the {len(testable)} seed(s) with a dense induction head.")
    missing = [s for s in runs.seeds if s not in testable]
    if missing:
        found += (f" Seed{'s' if len(missing) > 1 else ''} {seed_list(missing)} cannot test the claim: "
                  f"{'their dense models have' if len(missing) > 1 else 'its dense model has'} no induction head.")
    named = "; ".join(f"seed {r.seed}: {_named(r.dense.heads)} dense, {_named(r.sparse.heads)} sparse"
                      for r in runs.runs)
    return found + _threshold_free_sentence(runs) + (f" Per seed: {named}." if per_seed else "")


def seeds_metrics(runs: Seeds[SeedRun]) -> dict:
    """The chapter's metrics: every seed's row with its text and probe, the spreads, the testable seeds."""
    per_seed = [{**row, "text": {"tokens": run.text.tokens, "dense_keys_per_query": run.text.dense_keys_per_query,
                                 "kept_keys_per_query": run.text.kept_keys_per_query.tolist()},
                 "induction": {"testable": run.testable, "dense": run.dense.to_metrics(),
                               "sparse": run.sparse.to_metrics()}}
                for run, row in zip(runs.runs, runs.per_seed().to_dict(orient="records"))]
    return {"model": runs.first.dense.model, "seeds": runs.seeds, "per_seed": per_seed,
            "spreads": runs.spread_record(HEADLINES),
            "testable_seeds": runs.where(lambda r: r.testable), "threshold": runs.first.dense.threshold,
            "fewer_sparse_heads_seeds": runs.where(lambda r: r.row()["fewer_sparse_heads"])}


INDUCTION_RULE = ("reproduced when the sparse copies have at most half the dense model's induction heads; partly at "
                  "most three quarters; cannot test here when no dense model has an induction head, or when the "
                  "model was made to have them (the claim is about heads a general LM learns incidentally)")


def induction_claim(runs: Seeds[SeedRun] | Unavailable, control: InductionHeads | Unavailable | None,
                    train_seeds: Sequence[int]) -> Claim:
    """The claim, judged by :data:`INDUCTION_RULE` on the mean head counts over the training seeds: it cannot be
    tested where the model is unavailable or no seed's dense model has an induction head."""
    if isinstance(runs, Unavailable):
        summary, testable, counts = f"{runs.model}: pending, not measured here ({runs.reason.split(': ')[0]})", [], []
    else:
        summary, testable = induction_sentence(runs, per_seed=False), runs.where(lambda r: r.testable)
        counts = [runs.spread("dense_induction_heads"), runs.spread("sparse_induction_heads")]
    d, s = (counts[0].mean, counts[1].mean) if counts else (0.0, 0.0)
    by_design = None if isinstance(runs, Unavailable) else zoo.entry_for(runs.first.dense.model).induction_by_design
    verdict = ("cannot test here" if not testable or d == 0 or by_design else "reproduced" if s <= d / 2
               else "partly" if s <= 0.75 * d else "not reproduced")
    if by_design:
        summary += (f" Cannot test the paper's claim here: {runs.first.dense.model}'s induction heads are there by "
                    f"design ({by_design}), so keeping them says nothing about heads a general LM learns.")
    if isinstance(control, InductionHeads):
        summary += (f" Positive control {control.model} (dense, not trained here: no seeds): {len(control.heads)} of "
                    f"{control.n_heads} heads, {control.threshold_free()}.")
    values = {"available": bool(counts), "seeds": list(train_seeds), "testable_seeds": testable,
              "induction_by_design": by_design,
              "dense_heads": counts[0].to_dict() if counts else None,
              "sparse_heads": counts[1].to_dict() if counts else None,
              "threshold_free": None if isinstance(runs, Unavailable) else runs.spread_record(HEADLINES[-4:])}
    headline = ("not measured" if not counts else
                f"{runs.first.dense.model}: {counts[0].short(COUNT)} induction heads dense, "
                f"{counts[1].short(COUNT)} sparse" + (" (made by its curriculum)" if by_design else ""))
    return Claim("induction_heads", summary, values, verdict, INDUCTION_RULE, headline)
