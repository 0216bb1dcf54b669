"""Chapter 3's model cards: what each dense model is and how good it is, so a reader can judge the models the
chapter sparsifies (one card per training seed for a toy trained here), and how the chapter measures a model."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from .. import zoo
from ..data.files import context_length
from ..data.text import kjv_data
from ..formatting import DECIMAL2, SIGNIFICANT
from ..training.evaluate import evaluate
from .common import heldout_blocks
from .seeds import spread

__all__ = ["EdgeSettings", "ModelCard", "measure_card", "card_table", "cards_sentence"]


@dataclass(frozen=True)
class EdgeSettings:
    """Steps and other recipe fields (None, 0: the registry's); held-out blocks where a model has no held-out
    numbers of its own and KJV blocks (0: none); the untrained gate's bias; where data and models are cached."""

    dense_steps: int | None = None
    sparse_steps: int | None = None
    recipe: dict | None = None
    eval_blocks: int = 16
    block_size: int = 128
    kjv_blocks: int = 0
    gate_bias: float = 0.0
    batch_size: int = 64
    cache_dir: str | None = None

    def block_for(self, loaded) -> int:
        """``block_size``, or the model's context length where shorter (shakespeare-lm has T=64)."""
        return min(self.block_size, context_length(loaded.model) or self.block_size)


@dataclass(frozen=True)
class ModelCard:
    """One dense model (one training seed of a toy): measured, or pending with the reason."""

    model: str
    status: str  # "measured" or "pending"
    reason: str | None = None
    text: bool = True  # an English-text LM: its CE on another English text means something
    seed: int | None = None  # the training seed of a toy trained here (None: weights not trained here)
    source: str | None = None
    n_params: int | None = None
    first_use_s: float | None = None
    training_tokens: int | None = None  # tokens its pretraining here saw (None: not trained here)
    heldout: str | None = None
    heldout_ce: float | None = None
    bigram_ce: float | None = None
    kjv_ce: float | None = None
    kjv_blocks: int | None = None

    def to_record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def measure_card(name: str, loaded, settings: EdgeSettings, seed: int | None) -> ModelCard:
    """The card of dense model ``loaded``: a toy's held-out and bigram CE as its pretraining measured them on the
    whole held-out split, else CE on ``settings.eval_blocks`` held-out blocks; the KJV on ``settings.kjv_blocks``."""
    entry, info = zoo.entry_for(name), loaded.info
    block_size = settings.block_for(loaded)
    pretraining = loaded.pretraining
    if pretraining is not None:
        heldout, heldout_ce = f"the whole {entry.heldout_split} split", pretraining.heldout_ce
    else:
        heldout, data = heldout_blocks(loaded, settings.eval_blocks, block_size, settings.cache_dir)
        heldout_ce = evaluate(loaded.model, data, settings.batch_size).ce
    kjv_ce = kjv_blocks = None
    if settings.kjv_blocks and entry.text:
        kjv = kjv_data(loaded.tokenizer, block_size=block_size, max_blocks=settings.kjv_blocks,
                       cache_dir=settings.cache_dir)
        kjv_ce, kjv_blocks = evaluate(loaded.model, kjv, settings.batch_size).ce, int(len(kjv["input_ids"]))
    return ModelCard(model=name, status="measured", text=entry.text, seed=seed, source=info.get("source"),
                     n_params=sum(p.numel() for p in loaded.model.parameters()),
                     first_use_s=info.get("train_wall_time_s", info.get("convert_wall_time_s")),
                     training_tokens=None if pretraining is None else pretraining.tokens, heldout=heldout,
                     heldout_ce=heldout_ce, bigram_ce=None if pretraining is None else pretraining.bigram_ce,
                     kjv_ce=kjv_ce, kjv_blocks=kjv_blocks)


def card_table(cards) -> pd.DataFrame:
    """The model cards as displayed, one row per model and training seed (first-use times to 0.1 s)."""
    frame = pd.DataFrame([card.to_record() for card in cards]).set_index("model")
    if "seed" in frame:
        frame["seed"] = frame["seed"].astype("Int64")
    if "training_tokens" in frame:
        frame["training_tokens"] = frame["training_tokens"].astype("Int64")
    if "first_use_s" in frame:
        frame["first_use_s"] = frame["first_use_s"].round(1)
    return frame.drop(columns=["text"], errors="ignore").rename(columns={
        "n_params": "parameters", "first_use_s": "first use (s)", "training_tokens": "training tokens",
        "heldout": "held-out data",
        "heldout_ce": "held-out CE", "bigram_ce": "bigram CE (same data)", "kjv_ce": "KJV CE",
        "kjv_blocks": "KJV blocks", "seed": "training seed"})


def cards_sentence(cards) -> str:
    """Each model's size and held-out CE (mean and min-max over its seeds), against its bigram baseline and on
    the KJV where measured; a pending model with its reason."""
    parts = []
    for model in dict.fromkeys(card.model for card in cards):
        mine = [card for card in cards if card.model == model]
        measured = [card for card in mine if card.status == "measured"]
        if not measured:
            parts.append(f"{model} is pending: {mine[0].reason}.")
            continue
        seeds = f", {len(measured)} training seeds" if len(measured) > 1 else ""
        tokens = measured[0].training_tokens
        trained = "" if tokens is None else f", trained here on {SIGNIFICANT(tokens / 1e6)} M tokens"
        text = (f"{model} ({SIGNIFICANT(measured[0].n_params / 1e6)} M parameters{trained}{seeds}) has held-out CE "
                f"{spread([c.heldout_ce for c in measured]).summary(SIGNIFICANT)} nats")
        if all(c.bigram_ce is not None for c in measured):
            gap = spread([c.bigram_ce - c.heldout_ce for c in measured])
            side = "below" if gap.low > 0 else "above" if gap.high < 0 else "around"
            text += f", {spread([abs(v) for v in gap.values]).summary(DECIMAL2)} nats {side} its bigram baseline"
        if all(c.kjv_ce is not None for c in measured):
            text += f", and {spread([c.kjv_ce for c in measured]).summary(SIGNIFICANT)} on the KJV"
        parts.append(text + ".")
    return " ".join(parts)

