"""Chapter 3's question: how many token->token attention edges does a model keep, and at what loss?

:func:`measure_model` loads a model once and returns its :class:`ModelCard` (what the dense model is and how
good it is) and its :class:`EdgesAndLoss` row (dense CE, the untrained gate, and the sparse post-trained model
where asked). A model that cannot be loaded here is ``pending`` with the reason, never with numbers.
:class:`EdgesStudy` holds all models and says how they compare with the paper's reported fractions.
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
from .common import heldout_blocks, pretrain_overrides

__all__ = ["PAPER_KEPT_PERCENT", "KeptEdges", "ModelCard", "EdgesAndLoss", "EdgesStudy", "measure_model",
           "measure_models"]

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


@dataclass
class EdgesStudy:
    """Every model of the chapter: cards and rows, in the order measured."""

    cards: list[ModelCard] = field(default_factory=list)
    rows: list[EdgesAndLoss] = field(default_factory=list)

    @property
    def measured(self) -> list[EdgesAndLoss]:
        return [row for row in self.rows if row.measured]

    def records(self) -> pd.DataFrame:
        """The measured rows' flat fields, one row per model."""
        return pd.DataFrame([row.to_record() for row in self.measured])

    def head_panels(self) -> list[tuple[np.ndarray, str, bool]]:
        """(kept % per [layer, head], title, is sparse) of every measured model, for the per-head figure."""
        panels = []
        for row in self.measured:
            kind, edges = row.shown
            label = "sparse post-trained" if kind == "sparse" else "untrained gate"
            panels.append((100 * np.array(edges.per_head),
                           f"{row.model}\n{label}: {100 * edges.kept_fraction:.2f} % kept", kind == "sparse"))
        return panels

    @property
    def cards_sentence(self) -> str:
        return " ".join(card.sentence for card in self.cards)

    def card_table(self) -> pd.DataFrame:
        """The model cards as displayed."""
        frame = pd.DataFrame([card.to_record() for card in self.cards]).set_index("model")
        return frame.drop(columns=["text"], errors="ignore").rename(columns={
            "n_params": "parameters", "first_use_s": "first use (s)", "heldout": "held-out data",
            "heldout_ce": "held-out CE", "bigram_ce": "bigram CE (same data)", "kjv_ce": "KJV CE",
            "kjv_blocks": "KJV blocks"})

    def table(self) -> pd.DataFrame:
        """The edges-and-loss table as displayed (kept edges in percent)."""
        def shown(row: EdgesAndLoss) -> dict:
            values = {"model": row.model, "status": row.status, "held-out data": row.heldout or row.reason,
                      "T": row.context_length, "dense CE": row.dense_ce}
            for kind, label in (("gated", "untrained gate"), ("sparse", "sparse")):
                edges, ce = getattr(row, kind), getattr(row, f"{kind}_ce")
                values.update({f"{label}: CE": ce, f"{label}: CE change %": getattr(row, f"{kind}_ce_increase_pct"),
                               f"{label}: CE change (nats)": None if ce is None else ce - row.dense_ce,
                               f"{label}: kept %": None if edges is None else 100 * edges.kept_fraction,
                               f"{label}: keys/query": None if edges is None else edges.kept_per_query})
            values.update({"dense exact match": row.dense_exact_match, "sparse exact match": row.sparse_exact_match})
            return values

        return pd.DataFrame([shown(row) for row in self.rows]).set_index("model").dropna(axis=1, how="all")

    @staticmethod
    def paper_table() -> pd.DataFrame:
        return pd.DataFrame({"kept %": list(PAPER_KEPT_PERCENT.values()), "CE change": "loss kept (no increase)"},
                            index=pd.Index(list(PAPER_KEPT_PERCENT), name="the paper (reported)"))

    def per_layer_percent(self) -> pd.DataFrame:
        """Kept edges (%) per layer of every measured model (sparse where post-trained, else untrained gate)."""
        frame = pd.DataFrame({row.model: pd.Series(100 * np.array(row.shown[1].per_layer)) for row in self.measured})
        frame.index.name = "layer"
        return frame

    @property
    def sentence(self) -> str:
        """The edges-kept row of the claims table."""
        return "; ".join(row.sentence for row in self.rows)

    @property
    def paper_sentence(self) -> str:
        """How the post-trained models compare with the paper's reported fractions."""
        low, high = min(PAPER_KEPT_PERCENT.values()), max(PAPER_KEPT_PERCENT.values())
        trained = [row for row in self.measured if row.sparse is not None]
        if not trained:
            return (f"No model was post-trained here, so nothing compares with the paper's {low:g}–{high:g} % of "
                    f"edges kept.")
        parts = [f"{row.model} keeps {100 * row.sparse.kept_fraction:.2f} % ({100 * row.sparse.kept_fraction / low:.2g}"
                 f"× the paper's {low:g} %) at T = {row.context_length} with CE {row.sparse_ce_increase_pct:+.1f} % "
                 f"vs dense" for row in trained]
        return (f"The paper reports {low:g}–{high:g} % of edges kept at no loss increase, on models with far longer "
                f"contexts; here " + "; ".join(parts) + ".")


def _card(name: str, loaded, *, eval_blocks: int, kjv_blocks: int, block_size: int, batch_size: int,
          cache_dir) -> ModelCard:
    entry, info = zoo.entry_for(name), loaded.info
    metrics = info.get("metrics") or {}
    card = ModelCard(model=name, status="measured", text=entry.text, source=info.get("source"),
                     n_params=sum(p.numel() for p in loaded.model.parameters()),
                     first_use_s=info.get("train_wall_time_s", info.get("convert_wall_time_s")))
    if "heldout_ce" in metrics:
        card.heldout, card.heldout_ce = f"the whole {entry.heldout_split} split", metrics["heldout_ce"]
    else:
        card.heldout, data = heldout_blocks(loaded, eval_blocks, block_size, cache_dir)
        card.heldout_ce = evaluate(loaded.model, data, batch_size)["ce"]
    if "bigram" in metrics:
        card.bigram_ce = metrics["bigram"]["ce"]
    if kjv_blocks and entry.text:
        kjv = kjv_data(loaded.tokenizer, block_size=block_size, max_blocks=kjv_blocks, cache_dir=cache_dir)
        card.kjv_ce, card.kjv_blocks = evaluate(loaded.model, kjv, batch_size)["ce"], int(len(kjv["input_ids"]))
    return card


def _post_trained_row(name: str, recipe: dict, overrides: dict, cache_dir) -> EdgesAndLoss:
    loaded = zoo.load_sparse(name, recipe, dense_overrides=overrides, progress=False, cache_dir=cache_dir)
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
        model=name, status="measured", post_trained=True, heldout=heldout, context_length=int(length),
        gate_bias=info["recipe"]["gate_bias"], dense_ce=metrics["dense"]["heldout_ce"],
        gated_ce=metrics["gated_before_training"]["heldout_ce"],
        gated=KeptEdges.from_counts(metrics["gated_before_training"]["edges"]),
        sparse_ce=metrics["sparse"]["heldout_ce"], sparse=KeptEdges.from_counts(metrics["sparse"]["edges"]), **exact)


def _gated_row(name: str, loaded, *, eval_blocks: int, block_size: int, gate_bias: float, batch_size: int,
               cache_dir) -> EdgesAndLoss:
    heldout, data = heldout_blocks(loaded, eval_blocks, block_size, cache_dir)
    dense_ce = evaluate(loaded.model, data, batch_size)["ce"]
    sparsify(loaded.model, gate_bias=gate_bias)
    gated = evaluate(loaded.model, data, batch_size)
    return EdgesAndLoss(model=name, status="measured", post_trained=False, heldout=heldout,
                        context_length=int(data["input_ids"].shape[1]), gate_bias=float(gate_bias),
                        dense_ce=dense_ce, gated_ce=gated["ce"], gated=KeptEdges.from_counts(gated["edges"].to_dict()))


def measure_models(model_names, post_train, **settings) -> EdgesStudy:
    """:func:`measure_model` for every name, post-training those in ``post_train`` (a subset of the names)."""
    unknown = sorted(set(post_train) - set(model_names))
    if unknown:
        raise ValueError(f"post_train: {unknown} are not in model_names {list(model_names)}")
    study = EdgesStudy()
    for name in model_names:
        card, row = measure_model(name, post_train=name in post_train, **settings)
        study.cards.append(card)
        study.rows.append(row)
    return study


def measure_model(name: str, *, post_train: bool, recipe: dict | None = None, dense_steps: int = 0,
                  eval_blocks: int = 16, block_size: int = 128, kjv_blocks: int = 0, gate_bias: float = 0.0,
                  batch_size: int = 64, cache_dir=None) -> tuple[ModelCard, EdgesAndLoss]:
    """``name``'s card and row. With ``post_train`` the row reads the sparse post-trained model (``recipe`` over
    the model's default, trained on first use) and its own held-out metrics; otherwise the dense model is gated
    at ``gate_bias`` without training and measured on ``eval_blocks`` held-out blocks."""
    overrides = pretrain_overrides(name, dense_steps)
    try:
        loaded = zoo.load(name, progress=False, cache_dir=cache_dir, **overrides)
        card = _card(name, loaded, eval_blocks=eval_blocks, kjv_blocks=kjv_blocks, block_size=block_size,
                     batch_size=batch_size, cache_dir=cache_dir)
        if post_train:
            row = _post_trained_row(name, recipe or {}, overrides, cache_dir)
        else:
            row = _gated_row(name, loaded, eval_blocks=eval_blocks, block_size=block_size, gate_bias=gate_bias,
                             batch_size=batch_size, cache_dir=cache_dir)
    except (zoo.HubUnavailableError, FileNotFoundError) as error:
        reason = str(error).splitlines()[0]
        return (ModelCard(model=name, status="pending", reason=reason, text=zoo.entry_for(name).text),
                EdgesAndLoss(model=name, status="pending", post_trained=post_train, reason=reason))
    if not math.isfinite(row.dense_ce):
        raise RuntimeError(f"{name}: dense CE is not finite ({row.dense_ce})")
    return card, row
