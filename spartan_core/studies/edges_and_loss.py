"""Chapter 3's question: how many token->token attention edges does a model keep, and at what loss?

:func:`measure_model` loads a model once for one training seed and returns its :class:`ModelCard` (what the
dense model is and how good it is) and its :class:`EdgesAndLoss` row (dense CE, the untrained gate, and the
sparse post-trained model where asked). A model that cannot be loaded here is ``pending`` with the reason, never
with numbers. :func:`measure_models` measures every model whose weights depend on a training seed (post-trained
models, toys trained here) once per seed, the others once; :class:`EdgesStudy` holds every row, reports each
number as a mean with its min-max over seeds and says how the models compare with the paper's reported
fractions. :func:`thread_check` retrains one seed at another CPU thread count and asks whether the numbers move
by more than the seeds do (:class:`ThreadCheck`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from .. import zoo
from ..data.text import kjv_data
from ..mechanism.sparsify import sparsify
from ..training.evaluate import evaluate
from .common import Unavailable, heldout_blocks, load_pair, pretrain_overrides
from .seeds import Spread, spread, spread_table, table_cell

__all__ = ["PAPER_KEPT_PERCENT", "ROW_NUMBERS", "KeptEdges", "ModelCard", "EdgesAndLoss", "EdgesStudy", "ThreadCheck",
           "measure_model", "measure_models", "thread_check", "seeded"]

# The paper's numbers (typed from the paper, shown labelled as the paper's): percent of attention edges kept at no
# loss increase.
PAPER_KEPT_PERCENT = {"v1, models up to 1B parameters": 0.3, "v2+, models up to 7B parameters": 0.4}


@dataclass
class KeptEdges:
    """Kept edges of a model's deterministic masks on held-out data."""

    kept_fraction: float
    kept_per_query: float
    per_layer: list[float]
    per_head: list[list[float]]

    @classmethod
    def from_counts(cls, counts: dict) -> "KeptEdges":
        return cls(kept_fraction=counts["kept_fraction"], kept_per_query=counts["kept_per_query"],
                   per_layer=list(counts["per_layer"]), per_head=[list(row) for row in counts["per_head"]])


@dataclass
class ModelCard:
    """What a dense model is and how good it is, so a reader can judge the models the chapter sparsifies."""

    model: str
    status: str  # "measured" or "pending"
    reason: str | None = None
    text: bool = True  # an English-text LM: its CE on another English text means something
    seed: int | None = None  # the training seed of a toy trained here (None: weights not trained here)
    source: str | None = None
    n_params: int | None = None
    first_use_s: float | None = None
    heldout: str | None = None
    heldout_ce: float | None = None
    bigram_ce: float | None = None
    kjv_ce: float | None = None
    kjv_blocks: int | None = None

    def to_record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def sentence(self) -> str:
        if self.status != "measured":
            return f"{self.model} is pending: {self.reason}."
        text = f"{self.model} ({self.n_params / 1e6:.2g} M parameters) has held-out CE {self.heldout_ce:.3g} nats"
        if self.bigram_ce is not None:
            side = "below" if self.heldout_ce < self.bigram_ce else "above"
            text += f", {abs(self.bigram_ce - self.heldout_ce):.2f} nats {side} its bigram baseline"
        if self.kjv_ce is not None:
            text += f", and {self.kjv_ce:.3g} on the KJV"
        return text + "."


@dataclass
class EdgesAndLoss:
    """One model's row of the edges-and-loss table: dense CE, the untrained gate, the sparse model if trained."""

    model: str
    status: str
    post_trained: bool
    reason: str | None = None
    seed: int | None = None  # the training seed (None: the weights do not depend on one here)
    heldout: str | None = None
    context_length: int | None = None
    gate_bias: float | None = None
    dense_ce: float | None = None
    gated_ce: float | None = None
    gated: KeptEdges | None = None
    sparse_ce: float | None = None
    sparse: KeptEdges | None = None
    dense_exact_match: float | None = None
    sparse_exact_match: float | None = None
    dense_sha256: str | None = None  # the weights' SHA-256 (None where not hashed, as for hub models)
    sparse_sha256: str | None = None
    threads: int | None = None  # the torch CPU threads the sparse model (else the dense toy) was trained with

    @property
    def measured(self) -> bool:
        return self.status == "measured"

    @property
    def gated_ce_increase_pct(self) -> float | None:
        return _increase_pct(self.gated_ce, self.dense_ce)

    @property
    def sparse_ce_increase_pct(self) -> float | None:
        return _increase_pct(self.sparse_ce, self.dense_ce)

    @property
    def sparse_ce_change(self) -> float | None:
        """Sparse minus dense held-out CE in nats."""
        return None if self.sparse_ce is None else self.sparse_ce - self.dense_ce

    @property
    def gated_ce_change(self) -> float | None:
        return None if self.gated_ce is None else self.gated_ce - self.dense_ce

    def numbers(self) -> dict[str, float]:
        """The numbers this row reports (:data:`ROW_NUMBERS` it has), flat."""
        values = {"dense_ce": self.dense_ce, "gated_ce": self.gated_ce, "gated_ce_change": self.gated_ce_change,
                  "gated_ce_increase_pct": self.gated_ce_increase_pct, "sparse_ce": self.sparse_ce,
                  "sparse_ce_change": self.sparse_ce_change, "sparse_ce_increase_pct": self.sparse_ce_increase_pct,
                  "dense_exact_match": self.dense_exact_match, "sparse_exact_match": self.sparse_exact_match}
        for kind in ("gated", "sparse"):
            edges = getattr(self, kind)
            if edges is not None:
                values.update({f"{kind}_kept_fraction": edges.kept_fraction,
                               f"{kind}_kept_per_query": edges.kept_per_query})
        return {key: float(values[key]) for key in ROW_NUMBERS if values.get(key) is not None}

    @property
    def shown(self) -> tuple[str, KeptEdges]:
        """The model the per-head figure shows: the sparse one where post-trained, else the untrained gate."""
        return ("sparse", self.sparse) if self.sparse is not None else ("gated", self.gated)

    def to_record(self) -> dict:
        """Flat snake_case fields for metrics.json (``gated_kept_fraction``, ``sparse_per_head``, ...)."""
        row = {k: v for k, v in asdict(self).items() if v is not None and k not in ("gated", "sparse")}
        for kind in ("gated", "sparse"):
            edges = getattr(self, kind)
            if edges is not None:
                row.update({f"{kind}_{k}": v for k, v in asdict(edges).items()})
                row[f"{kind}_ce_increase_pct"] = getattr(self, f"{kind}_ce_increase_pct")
        return row

    @property
    def sentence(self) -> str:
        """This one row (one seed), for the reader; the study's sentences report the spread over seeds."""
        if not self.measured:
            return f"{self.model}: pending ({self.reason.split(': ')[0]})"
        if self.sparse is not None:
            return (f"{self.model}: {100 * self.sparse.kept_fraction:.2f} % of edges kept "
                    f"({self.sparse.kept_per_query:.2f} keys/query, T = {self.context_length}), CE "
                    f"{self.sparse_ce_increase_pct:+.1f} % vs dense")
        return (f"{self.model} (untrained gate only): {100 * self.gated.kept_fraction:.1f} % kept, CE "
                f"{self.gated_ce_increase_pct:+.1f} % vs dense")


def _increase_pct(ce: float | None, dense_ce: float | None) -> float | None:
    if ce is None or not dense_ce:
        return None
    return 100.0 * (ce / dense_ce - 1.0)


# The numbers of a row that the chapter reports over training seeds (keys of EdgesAndLoss.numbers()).
ROW_NUMBERS = ("dense_ce", "gated_ce", "gated_ce_change", "gated_ce_increase_pct", "gated_kept_fraction",
               "gated_kept_per_query", "sparse_ce", "sparse_ce_change", "sparse_ce_increase_pct",
               "sparse_kept_fraction", "sparse_kept_per_query", "dense_exact_match", "sparse_exact_match")


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def _signed_pct(value: float) -> str:
    return f"{value:+.1f} %"


def _g3(value: float) -> str:
    return f"{value:.3g}"


def _cell(values: Spread | None, fmt) -> str | None:
    """A table cell (:func:`~spartan_core.studies.seeds.table_cell`), empty where a value was not measured."""
    return None if values is None else table_cell(values, fmt)


def seeded(name: str, post_train: bool) -> bool:
    """Whether ``name``'s measured weights depend on a training seed here: a post-trained model (its
    post-training is seeded) or a toy (trained here); a downloaded model measured with the untrained gate is
    the same model whatever the seed, so it is measured once."""
    return post_train or zoo.entry_for(name).source == "toy"


@dataclass
class EdgesStudy:
    """Every model of the chapter: cards and rows (one per training seed for models whose weights depend on one),
    in the order measured, and the training seeds asked for."""

    cards: list[ModelCard] = field(default_factory=list)
    rows: list[EdgesAndLoss] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])

    @property
    def measured(self) -> list[EdgesAndLoss]:
        return [row for row in self.rows if row.measured]

    @property
    def models(self) -> list[str]:
        """The model names, each once, in the order measured."""
        return list(dict.fromkeys(row.model for row in self.rows))

    def rows_of(self, model: str) -> list[EdgesAndLoss]:
        return [row for row in self.rows if row.model == model]

    def measured_rows(self, model: str) -> list[EdgesAndLoss]:
        return [row for row in self.rows_of(model) if row.measured]

    def cards_of(self, model: str) -> list[ModelCard]:
        return [card for card in self.cards if card.model == model and card.status == "measured"]

    def row(self, model: str, seed: int | None) -> EdgesAndLoss | None:
        return next((row for row in self.measured_rows(model) if row.seed == seed), None)

    def records(self) -> pd.DataFrame:
        """The measured rows' flat fields, one row per model and seed (``seed`` empty where it has none)."""
        return pd.DataFrame([row.to_record() for row in self.measured])

    def spreads(self) -> dict[str, dict[str, Spread]]:
        """Per measured model, the spread over its rows (its training seeds; a single value for a model
        measured once) of every number of :data:`ROW_NUMBERS` that all its rows have."""
        out = {}
        for model in self.models:
            rows = self.measured_rows(model)
            if not rows:
                continue
            numbers = [row.numbers() for row in rows]
            keys = [key for key in ROW_NUMBERS if all(key in n for n in numbers)]
            out[model] = {key: spread([n[key] for n in numbers]) for key in keys}
        return out

    def spread_record(self) -> dict[str, dict[str, dict]]:
        """:meth:`spreads` as plain dicts (``mean``, ``min``, ``max``, ``n``, ``values``) for metrics.json."""
        return {model: {key: value.to_dict() for key, value in values.items()}
                for model, values in self.spreads().items()}

    def spread_table(self) -> pd.DataFrame:
        """Mean, min and max over seeds of every reported number, one row per measured model, and n."""
        frame = pd.DataFrame([{"model": row.model, **row.numbers()} for row in self.measured])
        return spread_table(frame, "model", [key for key in ROW_NUMBERS if key in frame])

    def head_panels(self) -> list[tuple[np.ndarray, str, bool]]:
        """(kept % per [layer, head], title, is sparse) of every measured model, for the per-head figure: the
        mean over its seeds."""
        panels = []
        for model in self.models:
            rows = self.measured_rows(model)
            if not rows:
                continue
            kind = rows[0].shown[0]
            percent = 100 * np.mean([np.array(row.shown[1].per_head) for row in rows], axis=0)
            kept = spread([row.shown[1].kept_fraction for row in rows])
            label = "sparse post-trained" if kind == "sparse" else "untrained gate"
            over = f", mean of {kept.n} seeds" if kept.n > 1 else ""
            panels.append((percent, f"{model}\n{label}: {100 * kept.mean:.2f} % kept{over}", kind == "sparse"))
        return panels

    def seeds_sentence(self) -> str:
        """Which models were measured per training seed and which need none."""
        per_seed = [m for m in self.models if any(r.seed is not None for r in self.measured_rows(m))]
        once = [m for m in self.models if self.measured_rows(m) and m not in per_seed]
        n = len(self.seeds)
        parts = []
        if per_seed:
            parts.append(f"{_names(per_seed)} {'was' if len(per_seed) == 1 else 'were'} measured once per training "
                         f"seed ({n} seed{'s' if n > 1 else ''}: {', '.join(map(str, self.seeds))}), each seed "
                         f"training its own model, so {'its' if len(per_seed) == 1 else 'their'} numbers below are "
                         f"means with their min–max over seeds")
        if once:
            parts.append(f"{_names(once)} {'is' if len(once) == 1 else 'are'} not trained here (only the untrained "
                         f"gate is measured, with no training seed), so {'it was' if len(once) == 1 else 'they were'}"
                         f" measured once")
        return ("; ".join(parts) + ".") if parts else "No model could be measured on this machine."

    @property
    def cards_sentence(self) -> str:
        parts = []
        for model in self.models:
            cards = self.cards_of(model)
            if not cards:
                pending = next(card for card in self.cards if card.model == model)
                parts.append(pending.sentence)
                continue
            card = cards[0]
            heldout = spread([c.heldout_ce for c in cards])
            seeds = f", {len(cards)} training seeds" if len(cards) > 1 else ""
            text = (f"{model} ({card.n_params / 1e6:.2g} M parameters{seeds}) has held-out CE "
                    f"{Spread.summary(heldout, _g3)} nats")
            if all(c.bigram_ce is not None for c in cards):
                gap = spread([c.bigram_ce - c.heldout_ce for c in cards])
                side = "below" if gap.low > 0 else "above" if gap.high < 0 else "around"
                text += f", {Spread.summary(spread([abs(v) for v in gap.values]), lambda v: f'{v:.2f}')} nats {side} its " \
                        f"bigram baseline"
            if all(c.kjv_ce is not None for c in cards):
                text += f", and {Spread.summary(spread([c.kjv_ce for c in cards]), _g3)} on the KJV"
            parts.append(text + ".")
        return " ".join(parts)

    def card_table(self) -> pd.DataFrame:
        """The model cards as displayed, one row per model and training seed (first-use times to 0.1 s)."""
        frame = pd.DataFrame([card.to_record() for card in self.cards]).set_index("model")
        if "seed" in frame:
            frame["seed"] = frame["seed"].astype("Int64")
        if "first_use_s" in frame:
            frame["first_use_s"] = frame["first_use_s"].round(1)
        return frame.drop(columns=["text"], errors="ignore").rename(columns={
            "n_params": "parameters", "first_use_s": "first use (s)", "heldout": "held-out data",
            "heldout_ce": "held-out CE", "bigram_ce": "bigram CE (same data)", "kjv_ce": "KJV CE",
            "kjv_blocks": "KJV blocks", "seed": "training seed"})

    def table(self) -> pd.DataFrame:
        """The edges-and-loss table as displayed: one row per model, each number its mean with its min-max
        over training seeds (kept edges in percent)."""
        spreads = self.spreads()

        def shown(model: str) -> dict:
            rows = self.rows_of(model)
            measured = [row for row in rows if row.measured]
            if not measured:
                return {"model": model, "status": "pending", "held-out data": rows[0].reason}
            s, first = spreads[model], measured[0]
            seeds = [row.seed for row in measured if row.seed is not None]
            values = {"model": model, "status": "measured", "held-out data": first.heldout,
                      "training seeds": str(len(seeds)) if seeds else "none (not trained here)",
                      "T": first.context_length, "dense CE": _cell(s.get("dense_ce"), _g3)}
            for kind, label in (("gated", "untrained gate"), ("sparse", "sparse")):
                values.update({
                    f"{label}: CE": _cell(s.get(f"{kind}_ce"), _g3),
                    f"{label}: CE change %": _cell(s.get(f"{kind}_ce_increase_pct"), lambda v: f"{v:+.1f}"),
                    f"{label}: CE change (nats)": _cell(s.get(f"{kind}_ce_change"), lambda v: f"{v:+.3g}"),
                    f"{label}: kept %": _cell(s.get(f"{kind}_kept_fraction"), lambda v: f"{100 * v:.3g}"),
                    f"{label}: keys/query": _cell(s.get(f"{kind}_kept_per_query"), _g3)})
            values.update({"dense exact match": _cell(s.get("dense_exact_match"), lambda v: f"{v:.1%}"),
                           "sparse exact match": _cell(s.get("sparse_exact_match"), lambda v: f"{v:.1%}")})
            return values

        return pd.DataFrame([shown(model) for model in self.models]).set_index("model").dropna(axis=1, how="all")

    @staticmethod
    def paper_table() -> pd.DataFrame:
        return pd.DataFrame({"kept %": list(PAPER_KEPT_PERCENT.values()), "CE change": "loss kept (no increase)"},
                            index=pd.Index(list(PAPER_KEPT_PERCENT), name="the paper (reported)"))

    def per_layer_percent(self) -> pd.DataFrame:
        """Kept edges (%) per layer of every measured model (sparse where post-trained, else untrained gate):
        the mean over its seeds."""
        frame = pd.DataFrame({model: pd.Series(100 * np.mean([np.array(row.shown[1].per_layer)
                                                              for row in self.measured_rows(model)], axis=0))
                              for model in self.models if self.measured_rows(model)})
        frame.index.name = "layer"
        return frame

    def _model_sentence(self, model: str) -> str:
        rows = self.rows_of(model)
        if not any(row.measured for row in rows):
            return rows[0].sentence
        s, first = self.spreads()[model], self.measured_rows(model)[0]
        if "sparse_kept_fraction" in s:
            return (f"{model}: {Spread.summary(s['sparse_kept_fraction'], _pct)} of edges kept "
                    f"({Spread.summary(s['sparse_kept_per_query'], lambda v: f'{v:.2f}')} keys/query, "
                    f"T = {first.context_length}), CE {Spread.summary(s['sparse_ce_increase_pct'], _signed_pct)} vs dense")
        why = "untrained gate only" + ("" if first.seed is not None else ", not trained here: no training seed")
        return (f"{model} ({why}): {Spread.summary(s['gated_kept_fraction'], lambda v: f'{100 * v:.1f} %')} kept, CE "
                f"{Spread.summary(s['gated_ce_increase_pct'], _signed_pct)} vs dense")

    @property
    def sentence(self) -> str:
        """The edges-kept row of the claims table."""
        return "; ".join(self._model_sentence(model) for model in self.models)

    @property
    def spread_sentence(self) -> str:
        """How far apart the training seeds of each model land (the spread the edges-vs-loss figure shows)."""
        parts = []
        for model, s in self.spreads().items():
            kind = "sparse" if "sparse_kept_fraction" in s else "gated"
            kept, change = s[f"{kind}_kept_fraction"], s[f"{kind}_ce_increase_pct"]
            label = "sparse model" if kind == "sparse" else "untrained gate"
            if kept.n == 1:
                parts.append(f"{model}'s {label} is a single point (one model, no training seed)")
                continue
            ratio = f", {kept.high / kept.low:.2g}× from lowest to highest" if kept.low > 0 else ""
            seeds = "both seeds" if kept.n == 2 else f"the {kept.n} seeds"
            parts.append(f"{seeds} of {model}'s {label} keep {100 * kept.low:.3g}–{100 * kept.high:.3g} % "
                         f"of edges{ratio}, at {change.low:+.1f} to {change.high:+.1f} % CE change")
        if not parts:
            return "No model was measured, so there is no spread to show."
        return "; ".join(parts)[0].upper() + "; ".join(parts)[1:] + "."

    @property
    def paper_sentence(self) -> str:
        """How the post-trained models compare with the paper's reported fractions."""
        low, high = min(PAPER_KEPT_PERCENT.values()), max(PAPER_KEPT_PERCENT.values())
        spreads = self.spreads()
        trained = [model for model in self.models if "sparse_kept_fraction" in spreads.get(model, {})]
        if not trained:
            return (f"No model was post-trained here, so nothing compares with the paper's {low:g}–{high:g} % of "
                    f"edges kept.")
        parts = []
        for model in trained:
            s = spreads[model]
            kept = s["sparse_kept_fraction"]
            parts.append(f"{model} keeps {Spread.summary(kept, _pct)}, {100 * kept.mean / low:.2g}× the paper's {low:g} %"
                         f"{' on average' if kept.n > 1 else ''}, at T = {self.measured_rows(model)[0].context_length}"
                         f" with CE {Spread.summary(s['sparse_ce_increase_pct'], _signed_pct)} vs dense")
        return (f"The paper reports {low:g}–{high:g} % of edges kept at no loss increase, on models with far longer "
                f"contexts; here " + "; ".join(parts) + ".")


def _names(models: list[str]) -> str:
    return models[0] if len(models) == 1 else ", ".join(models[:-1]) + " and " + models[-1]


# What the thread check compares: (row field, label, format).
_THREAD_NUMBERS = (("dense_ce", "dense held-out CE", lambda v: f"{v:.4g}"),
                   ("sparse_kept_fraction", "sparse kept edges", _pct),
                   ("sparse_ce", "sparse held-out CE", lambda v: f"{v:.4g}"),
                   ("sparse_exact_match", "sparse exact match", lambda v: f"{v:.1%}"))


@dataclass
class ThreadCheck:
    """One training seed of a model retrained at another CPU thread count, against the same seed at the
    recipe's thread count (``reference``) and against the spread over the study's training seeds (``seeds``)."""

    model: str
    seed: int
    threads: int
    reference: EdgesAndLoss
    retrained: EdgesAndLoss
    seeds: dict[str, Spread]

    @property
    def reference_threads(self) -> int | None:
        return self.reference.threads

    @property
    def weights_differ(self) -> dict[str, bool | None]:
        """Per kind (dense, sparse): whether the two models' weights differ (None where either is not hashed)."""
        out = {}
        for kind in ("dense", "sparse"):
            a, b = getattr(self.reference, f"{kind}_sha256"), getattr(self.retrained, f"{kind}_sha256")
            out[kind] = None if a is None or b is None else a != b
        return out

    def compared(self) -> pd.DataFrame:
        """One row per compared number: the value at the recipe's threads (``reference``) and at ``threads``
        (``retrained``), the change, the seeds' min, max and range (max - min) and whether the change is within
        that range."""
        reference, retrained = self.reference.numbers(), self.retrained.numbers()
        rows = []
        for key, label, _ in _THREAD_NUMBERS:
            if key not in reference or key not in retrained or key not in self.seeds:
                continue
            s, change = self.seeds[key], retrained[key] - reference[key]
            rows.append({"number": label, "key": key, "reference": reference[key], "retrained": retrained[key],
                         "change": change, "seeds min": s.low, "seeds max": s.high, "seeds range": s.high - s.low,
                         "seeds": s.n, "within seed spread": abs(change) <= s.high - s.low})
        return pd.DataFrame(rows, columns=["number", "key", "reference", "retrained", "change", "seeds min",
                                           "seeds max", "seeds range", "seeds", "within seed spread"]
                            ).set_index("number")

    def table(self) -> pd.DataFrame:
        """:meth:`compared` as displayed, its columns naming the thread counts."""
        return self.compared().drop(columns=["key"]).rename(columns={
            "reference": f"seed {self.seed}, {self._threads_text(self.reference_threads)}",
            "retrained": f"seed {self.seed}, {self._threads_text(self.threads)}"})

    @staticmethod
    def _threads_text(threads: int | None) -> str:
        return "the recipe's threads" if threads is None else f"{threads} thread{'s' if threads != 1 else ''}"

    @property
    def within_seed_spread(self) -> bool | None:
        """Whether every compared change is within the range the training seeds span (None with one seed)."""
        compared = self.compared()
        if compared.empty or int(compared["seeds"].iloc[0]) < 2:
            return None
        return bool(compared["within seed spread"].all())

    def to_record(self) -> dict:
        return {"model": self.model, "seed": self.seed, "threads": self.threads,
                "reference_threads": self.reference_threads, "weights_differ": self.weights_differ,
                "dense_sha256": {"reference": self.reference.dense_sha256, "retrained": self.retrained.dense_sha256},
                "sparse_sha256": {"reference": self.reference.sparse_sha256,
                                  "retrained": self.retrained.sparse_sha256},
                "within_seed_spread": self.within_seed_spread,
                "compared": self.compared().reset_index().to_dict("records")}

    @property
    def sentence(self) -> str:
        differ, ref = self.weights_differ, self.reference_threads
        at, at_ref = self._threads_text(self.threads), self._threads_text(ref)
        head = f"Retrained with {at} instead of {at_ref}, training seed {self.seed} of {self.model} "
        if differ["sparse"] is None:
            head += "could not be compared weight by weight (its weights are not hashed). "
        elif not any(differ.values()):
            head += "is the same model: its dense and sparse weights have the same SHA-256. "
        else:
            which = " and ".join(kind for kind in ("dense", "sparse") if differ[kind])
            head += (f"is another model: its {which} weights differ (sparse SHA-256 "
                     f"{self.reference.sparse_sha256[:12]} with {at_ref}, {self.retrained.sparse_sha256[:12]} with "
                     f"{at}). ")
        compared = self.compared()
        formats = {key: fmt for key, _, fmt in _THREAD_NUMBERS}
        values = "; ".join(f"{label} {formats[row['key']](row['retrained'])} ({formats[row['key']](row['reference'])}"
                           f" with {at_ref})" for label, row in compared.iterrows())
        text = head + f"With {at}: {values}."
        if len(compared) and (compared["change"] == 0).all() and any(differ.values()):
            text += (" The numbers are the same to every digit stored: the weights differ only in bits too small "
                     "to move them.")
        n = int(compared["seeds"].iloc[0]) if len(compared) else 0
        if n < 2:
            return text + " With a single training seed there is no seed spread to compare the change with."
        inside = [label for label, row in compared.iterrows() if row["within seed spread"]]
        outside = [label for label, row in compared.iterrows() if not row["within seed spread"]]
        if not outside:
            return text + (f" Every change is within the spread over the {n} training seeds (no larger than the "
                           f"seeds' max − min): here another thread count moves the numbers no more than another "
                           f"seed does.")
        ranges = "; ".join(
            f"{label}: {formats[row['key']](abs(row['change']))} against a seed range of "
            f"{formats[row['key']](row['seeds range'])}" for label, row in compared.loc[outside].iterrows())
        kept = f" ({_names(inside)} within it)" if inside else ""
        return text + (f" The change is larger than the spread over the {n} training seeds for {_names(outside)}"
                       f"{kept} ({ranges}): there, another thread count moves the numbers more than another seed "
                       f"does.")


def _fitting(loaded, block_size: int) -> int:
    """``block_size``, or the model's context length where that is shorter (shakespeare-lm has T=64)."""
    config = loaded.model.config
    context = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    return min(block_size, context) if context else block_size


def _card(name: str, loaded, *, eval_blocks: int, kjv_blocks: int, block_size: int, batch_size: int,
          cache_dir, seed: int | None = None) -> ModelCard:
    entry, info = zoo.entry_for(name), loaded.info
    block_size = _fitting(loaded, block_size)
    metrics = info.get("metrics") or {}
    card = ModelCard(model=name, status="measured", text=entry.text, source=info.get("source"), seed=seed,
                     n_params=sum(p.numel() for p in loaded.model.parameters()),
                     first_use_s=info.get("train_wall_time_s", info.get("convert_wall_time_s")))
    if "heldout_ce" in metrics:
        card.heldout, card.heldout_ce = f"the whole {entry.heldout_split} split", metrics["heldout_ce"]
    else:
        card.heldout, data = heldout_blocks(loaded, eval_blocks, block_size, cache_dir)
        card.heldout_ce = evaluate(loaded.model, data, batch_size).ce
    if "bigram" in metrics:
        card.bigram_ce = metrics["bigram"]["ce"]
    if kjv_blocks and entry.text:
        kjv = kjv_data(loaded.tokenizer, block_size=block_size, max_blocks=kjv_blocks, cache_dir=cache_dir)
        card.kjv_ce, card.kjv_blocks = evaluate(loaded.model, kjv, batch_size).ce, int(len(kjv["input_ids"]))
    return card


def _post_trained_row(name: str, dense, loaded, seed: int | None) -> EdgesAndLoss:
    info, metrics = loaded.info, loaded.info["metrics"]
    split = info["heldout_split"]
    if split in loaded.data:
        heldout, length = f"the {split} split", loaded.data[split]["input_ids"].shape[1]
    else:
        length = info["recipe"]["block_size"]
        heldout = f"Shakespeare validation plays, blocks of {length}"
    exact = {f"{kind}_exact_match": metrics[kind]["exact_match"]["all"]
             for kind in ("dense", "sparse") if "exact_match" in metrics[kind]}
    return EdgesAndLoss(
        model=name, status="measured", post_trained=True, seed=seed, heldout=heldout, context_length=int(length),
        gate_bias=info["recipe"]["gate_bias"], dense_ce=metrics["dense"]["heldout_ce"],
        gated_ce=metrics["gated_before_training"]["heldout_ce"],
        gated=KeptEdges.from_counts(metrics["gated_before_training"]["edges"]),
        sparse_ce=metrics["sparse"]["heldout_ce"], sparse=KeptEdges.from_counts(metrics["sparse"]["edges"]),
        dense_sha256=_provenance(dense, "weights_sha256"), sparse_sha256=_provenance(loaded, "weights_sha256"),
        threads=_provenance(loaded, "threads"), **exact)


def _provenance(loaded, key: str):
    return getattr(loaded, "provenance", {}).get(key)


def _gated_row(name: str, loaded, *, eval_blocks: int, block_size: int, gate_bias: float, batch_size: int,
               cache_dir, seed: int | None) -> EdgesAndLoss:
    heldout, data = heldout_blocks(loaded, eval_blocks, _fitting(loaded, block_size), cache_dir)
    dense_ce = evaluate(loaded.model, data, batch_size).ce
    sha, threads = _provenance(loaded, "weights_sha256"), _provenance(loaded, "threads")
    sparsify(loaded.model, gate_bias=gate_bias)
    gated = evaluate(loaded.model, data, batch_size)
    return EdgesAndLoss(model=name, status="measured", post_trained=False, seed=seed, heldout=heldout,
                        context_length=int(data["input_ids"].shape[1]), gate_bias=float(gate_bias),
                        dense_ce=dense_ce, gated_ce=gated.ce, gated=KeptEdges.from_counts(gated.edges.to_dict()),
                        dense_sha256=sha, threads=threads)


def measure_models(model_names, post_train, seeds=(0,), **settings) -> EdgesStudy:
    """:func:`measure_model` for every name, post-training those in ``post_train`` (a subset of the names); a
    model whose weights depend on a training seed (:func:`seeded`) is measured for each of ``seeds``, any other
    once. A model pending for its first seed is not tried again."""
    unknown = sorted(set(post_train) - set(model_names))
    if unknown:
        raise ValueError(f"post_train: {unknown} are not in model_names {list(model_names)}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds: need at least one training seed")
    study = EdgesStudy(seeds=seeds)
    for name in model_names:
        trained, toy = name in post_train, zoo.entry_for(name).source == "toy"
        for index, seed in enumerate(seeds if seeded(name, trained) else [None]):
            # a downloaded model post-trained per seed is one dense model: one card
            card, row = measure_model(name, post_train=trained, seed=seed, card=toy or index == 0, **settings)
            if card is not None:
                study.cards.append(card)
            study.rows.append(row)
            if not row.measured:
                break
    return study


def measure_model(name: str, *, post_train: bool, seed: int | None = 0, threads: int | None = None,
                  recipe: dict | None = None, dense_steps: int = 0, sparse_steps: int = 0, eval_blocks: int = 16,
                  block_size: int = 128, kjv_blocks: int = 0, gate_bias: float = 0.0, batch_size: int = 64,
                  cache_dir=None, card: bool = True) -> tuple[ModelCard | None, EdgesAndLoss]:
    """``name``'s card and row for training seed ``seed`` (None: a model whose weights do not depend on one,
    loaded as seed 0). With ``post_train`` the row reads the sparse post-trained model (``recipe`` and
    ``sparse_steps`` over the model's default, trained on first use) and its own held-out metrics; otherwise the
    dense model is gated at ``gate_bias`` without training and measured on ``eval_blocks`` held-out blocks.
    ``threads`` retrains at another torch CPU thread count (None: the recipe's). ``cache_dir`` is where the text
    data and the models that are not post-trained are cached. Without ``card`` the card is not measured (None)."""
    train_seed = 0 if seed is None else seed
    card_seed = seed if zoo.entry_for(name).source == "toy" else None
    try:
        if post_train:
            pair = load_pair(name, seed=train_seed, threads=threads, dense_steps=dense_steps,
                             sparse_steps=sparse_steps, recipe=recipe)
            if isinstance(pair, Unavailable):
                raise FileNotFoundError(pair.reason)
            loaded, row = pair.dense, _post_trained_row(name, pair.dense, pair.sparse, seed)
        else:
            overrides = pretrain_overrides(name, dense_steps, train_seed, threads)
            loaded = zoo.load(name, progress=False, cache_dir=cache_dir, **overrides)
            row = None
        measured_card = _card(name, loaded, eval_blocks=eval_blocks, kjv_blocks=kjv_blocks, block_size=block_size,
                              batch_size=batch_size, cache_dir=cache_dir, seed=card_seed) if card else None
        if row is None:
            row = _gated_row(name, loaded, eval_blocks=eval_blocks, block_size=block_size, gate_bias=gate_bias,
                             batch_size=batch_size, cache_dir=cache_dir, seed=seed)
    except (zoo.HubUnavailableError, FileNotFoundError) as error:
        reason = str(error).splitlines()[0]
        pending = ModelCard(model=name, status="pending", reason=reason, text=zoo.entry_for(name).text,
                            seed=card_seed) if card else None
        return pending, EdgesAndLoss(model=name, status="pending", post_trained=post_train, reason=reason, seed=seed)
    if not math.isfinite(row.dense_ce):
        raise RuntimeError(f"{name}: dense CE is not finite ({row.dense_ce})")
    return measured_card, row


def thread_check(study: EdgesStudy, name: str, threads: int, *, seed: int | None = None,
                 **settings) -> ThreadCheck | Unavailable:
    """Post-train ``name`` for ``seed`` (default: the study's first training seed) at ``threads`` torch CPU
    threads and compare it with the same seed at the recipe's thread count (the study's row, measured here if
    the study lacks it) and with the spread over the study's seeds. ``settings`` as for :func:`measure_model`."""
    seed = study.seeds[0] if seed is None else seed
    reference = study.row(name, seed)
    if reference is None or not reference.post_trained:
        _, reference = measure_model(name, post_train=True, seed=seed, card=False, **settings)
    _, retrained = measure_model(name, post_train=True, seed=seed, threads=threads, card=False, **settings)
    for row in (reference, retrained):
        if not row.measured:
            return Unavailable(name, row.reason)
    rows = [row for row in study.measured_rows(name) if row.post_trained] or [reference]
    numbers = [row.numbers() for row in rows]
    seeds = {key: spread([n[key] for n in numbers]) for key, _, _ in _THREAD_NUMBERS
             if all(key in n for n in numbers)}
    return ThreadCheck(model=name, seed=seed, threads=threads, reference=reference, retrained=retrained, seeds=seeds)
