"""Chapter 3's question: how many token->token attention edges does a model keep, and at what loss? Each number
is reported as a mean with its min-max over training seeds, beside the paper's reported fractions."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .. import zoo
from ..claims import Claim
from ..formatting import DECIMAL2, PERCENT, PERCENT1, SIGNED_PERCENT, SIGNIFICANT, counted, listing, ratio, seed_list
from ..mechanism.sparsify import sparsify
from ..training.evaluate import HeldOut, evaluate
from .common import ModelPair, Unavailable, heldout_blocks, load_pair, pretrain_overrides
from .model_cards import EdgeSettings, ModelCard, measure_card
from .seeds import Seeds, spread_table, table_cell

# The paper's percent of attention edges kept at no loss increase (typed from the paper, shown labelled as such).
PAPER_KEPT_PERCENT = {"v1, models up to 1B parameters": 0.3, "v2+, models up to 7B parameters": 0.4}

# The numbers of a row that the chapter reports over training seeds (keys of EdgesAndLoss.row()).
ROW_NUMBERS = ("dense_ce", "gated_ce", "gated_ce_change", "gated_ce_increase_pct", "gated_kept_fraction",
               "gated_kept_per_query", "sparse_ce", "sparse_ce_change", "sparse_ce_increase_pct",
               "sparse_kept_fraction", "sparse_kept_per_query", "dense_exact_match", "sparse_exact_match")


@dataclass(frozen=True)
class EdgesAndLoss:
    """One model's row for one training seed: held-out numbers of the dense model, of the untrained gate and of
    the sparse post-trained model where there is one (pending with the reason, never with numbers)."""

    model: str
    status: str  # "measured" or "pending"
    post_trained: bool
    reason: str | None = None
    seed: int | None = None  # the training seed (None: the weights do not depend on one here)
    heldout: str | None = None
    context_length: int | None = None
    gate_bias: float | None = None
    dense: HeldOut | None = None
    gated: HeldOut | None = None
    sparse: HeldOut | None = None
    dense_sha256: str | None = None  # the weights' SHA-256 (None where not hashed, as for hub models)
    sparse_sha256: str | None = None
    threads: int | None = None  # the torch CPU threads the sparse model (else the dense toy) was trained with

    @property
    def measured(self) -> bool:
        return self.status == "measured"

    def row(self) -> dict[str, float]:
        """The numbers of :data:`ROW_NUMBERS` this row has, flat; CE changes are against dense."""
        values = {"dense_ce": self.dense.ce, "dense_exact_match": self.dense.exact_match_all} if self.dense else {}
        for kind, held in (("gated", self.gated), ("sparse", self.sparse)):
            if held is not None:
                values.update({f"{kind}_ce": held.ce, f"{kind}_ce_change": held.ce - self.dense.ce,
                               f"{kind}_ce_increase_pct": 100.0 * (held.ce / self.dense.ce - 1.0) if self.dense.ce
                               else None, f"{kind}_kept_fraction": held.kept_fraction,
                               f"{kind}_kept_per_query": held.kept_per_query})
        values["sparse_exact_match"] = self.sparse.exact_match_all if self.sparse else None
        return {key: float(values[key]) for key in ROW_NUMBERS if values.get(key) is not None}

    @property
    def shown(self) -> str:
        """The model the figures and sentences show: ``sparse`` where post-trained, else ``gated``."""
        return "gated" if self.sparse is None else "sparse"

    def to_record(self) -> dict:
        """Flat fields for metrics.json: ``dense_ce``, ``gated_kept_fraction``, ``sparse_per_head``, ..."""
        record = {k: v for k, v in asdict(self).items() if v is not None and k not in ("dense", "gated", "sparse")}
        record.update({k: v for k, v in self.row().items() if not k.endswith("_change")})
        for kind, held in (("gated", self.gated), ("sparse", self.sparse)):
            if held is not None and held.edges is not None:
                record.update({f"{kind}_per_layer": list(held.edges.per_layer),
                               f"{kind}_per_head": [list(heads) for heads in held.edges.per_head]})
        return record


@dataclass(frozen=True)
class EdgesStudy:
    """Every model in the order measured with its rows, one per training seed (one, seed None, for a model whose
    weights depend on none; a model stops at its first pending row), the model cards, and the seeds asked for."""

    seeds: list[int]
    cards: tuple[ModelCard, ...]
    rows: dict[str, Seeds[EdgesAndLoss]]

    @property
    def measured(self) -> dict[str, Seeds[EdgesAndLoss]]:
        """The measured rows of every model measured for its first seed."""
        return {model: Seeds(tuple(row for row in rows.runs if row.measured))
                for model, rows in self.rows.items() if rows.first.measured}


def records(models: EdgesStudy, flat=EdgesAndLoss.to_record) -> pd.DataFrame:
    """One row per measured model and seed: its :meth:`~EdgesAndLoss.to_record` (or ``flat``)."""
    return pd.DataFrame([flat(row) for rows in models.measured.values() for row in rows.runs])


def spread_record(models: EdgesStudy) -> dict[str, dict[str, dict]]:
    return {model: rows.spread_record(ROW_NUMBERS) for model, rows in models.measured.items()}


def seed_spread_table(models: EdgesStudy) -> pd.DataFrame:
    """Mean, min and max over seeds of every reported number, one row per measured model, and n."""
    frame = records(models, lambda row: {"model": row.model, **row.row()})
    return spread_table(frame, "model", [key for key in ROW_NUMBERS if key in frame])


def edges_table(models: EdgesStudy) -> pd.DataFrame:
    """The edges-and-loss table as displayed: each number its mean with its min-max over training seeds."""
    def shown(model: str, first: EdgesAndLoss) -> dict:
        if not first.measured:
            return {"model": model, "status": "pending", "held-out data": first.reason}
        s, seeds = models.measured[model].spreads(ROW_NUMBERS), [row.seed for row in models.measured[model].runs]
        values = {"model": model, "status": "measured", "held-out data": first.heldout, "training seeds":
                  "none (not trained here)" if first.seed is None else str(len(seeds)), "T": first.context_length,
                  "dense CE": table_cell(s.get("dense_ce"), SIGNIFICANT)}
        for kind, label in (("gated", "untrained gate"), ("sparse", "sparse")):
            values.update({f"{label}: CE": table_cell(s.get(f"{kind}_ce"), SIGNIFICANT),
                           f"{label}: CE change %": table_cell(s.get(f"{kind}_ce_increase_pct"), SIGNED_PERCENT),
                           f"{label}: CE change (nats)": table_cell(s.get(f"{kind}_ce_change"), SIGNIFICANT),
                           f"{label}: kept %": table_cell(s.get(f"{kind}_kept_fraction"), PERCENT),
                           f"{label}: keys/query": table_cell(s.get(f"{kind}_kept_per_query"), SIGNIFICANT)})
        return {**values, "dense exact match": table_cell(s.get("dense_exact_match"), PERCENT1),
                "sparse exact match": table_cell(s.get("sparse_exact_match"), PERCENT1)}

    table = pd.DataFrame([shown(model, rows.first) for model, rows in models.rows.items()]).set_index("model")
    return table.dropna(axis=1, how="all")


def paper_table() -> pd.DataFrame:
    return pd.DataFrame({"kept %": list(PAPER_KEPT_PERCENT.values()), "CE change": "loss kept (no increase)"},
                        index=pd.Index(list(PAPER_KEPT_PERCENT), name="the paper (reported)"))


def _mean_percent(rows: Seeds[EdgesAndLoss], per: str) -> np.ndarray:
    """Kept edges (%) ``per`` layer or head of the model a model's rows show, the mean over its seeds."""
    return 100 * np.mean([getattr(getattr(row, row.shown).edges, per) for row in rows.runs], axis=0)


def per_layer_percent(models: EdgesStudy) -> pd.DataFrame:
    frame = pd.DataFrame({model: pd.Series(_mean_percent(rows, "per_layer"))
                          for model, rows in models.measured.items()})
    return frame.rename_axis("layer")


def head_panels(models: EdgesStudy) -> list[tuple[np.ndarray, str, bool]]:
    """(kept % per [layer, head], title, is sparse) of every measured model, for the per-head figure."""
    panels = []
    for model, rows in models.measured.items():
        kind, kept = rows.first.shown, rows.spread(f"{rows.first.shown}_kept_fraction")
        title = (f"{model}\n{'sparse post-trained' if kind == 'sparse' else 'untrained gate'}: {PERCENT(kept.mean)} "
                 f"kept" + (f", mean of {kept.n} seeds" if kept.n > 1 else ""))
        panels.append((_mean_percent(rows, "per_head"), title, kind == "sparse"))
    return panels


def seeds_sentence(models: EdgesStudy) -> str:
    """Which models were measured per training seed and which need none."""
    per_seed = [m for m, rows in models.measured.items() if rows.first.seed is not None]
    once, one, parts = [m for m in models.measured if m not in per_seed], len(per_seed) == 1, []
    if per_seed:
        parts.append(f"{listing(per_seed)} {'was' if one else 'were'} measured once per training seed "
                     f"({counted(len(models.seeds), 'seed')}: {seed_list(models.seeds)}), each seed training its own "
                     f"model, so {'its' if one else 'their'} numbers below are means with their min–max over seeds")
    if once:
        parts.append(f"{listing(once)} {'is' if len(once) == 1 else 'are'} not trained here (only the untrained gate "
                     f"is measured, with no training seed), so {'it was' if len(once) == 1 else 'they were'} "
                     f"measured once")
    return ("; ".join(parts) + ".") if parts else "No model could be measured on this machine."


def _model_sentence(models: EdgesStudy, model: str, first: EdgesAndLoss) -> str:
    if not first.measured:
        return f"{model}: pending ({first.reason.split(': ')[0]})"
    s = models.measured[model].spreads(ROW_NUMBERS)
    if "sparse_kept_fraction" in s:
        return (f"{model}: {s['sparse_kept_fraction'].summary(PERCENT)} of edges kept "
                f"({s['sparse_kept_per_query'].summary(DECIMAL2)} keys/query, T = {first.context_length}), CE "
                f"{s['sparse_ce_increase_pct'].summary(SIGNED_PERCENT)} vs dense")
    why = "untrained gate only" + ("" if first.seed is not None else ", not trained here: no training seed")
    return (f"{model} ({why}): {s['gated_kept_fraction'].summary(PERCENT1)} kept, CE "
            f"{s['gated_ce_increase_pct'].summary(SIGNED_PERCENT)} vs dense")


def edges_sentence(models: EdgesStudy) -> str:
    """Per model, its kept edges and CE change over its training seeds: the edges-kept row of the claims table."""
    return "; ".join(_model_sentence(models, model, rows.first) for model, rows in models.rows.items())


def spread_sentence(models: EdgesStudy) -> str:
    """How far apart the training seeds of each model land (the spread the edges-vs-loss figure shows)."""
    parts = []
    for model, rows in models.measured.items():
        kind = rows.first.shown
        kept, change = rows.spread(f"{kind}_kept_fraction"), rows.spread(f"{kind}_ce_increase_pct")
        label = "sparse model" if kind == "sparse" else "untrained gate"
        if kept.n == 1:
            parts.append(f"{model}'s {label} is a single point (one model, no training seed)")
            continue
        times = f", {ratio(kept.high / kept.low)} from lowest to highest" if kept.low > 0 else ""
        parts.append(f"{'both seeds' if kept.n == 2 else f'the {kept.n} seeds'} of {model}'s {label} keep "
                     f"{PERCENT(kept.low)}–{PERCENT(kept.high)} of edges{times}, at {SIGNED_PERCENT(change.low)} to "
                     f"{SIGNED_PERCENT(change.high)} CE change")
    text = "; ".join(parts) or "no model was measured, so there is no spread to show"
    return text[0].upper() + text[1:] + "."


def paper_sentence(models: EdgesStudy) -> str:
    """How the post-trained models compare with the paper's reported fractions."""
    paper = min(PAPER_KEPT_PERCENT.values())
    low, high, parts = PERCENT1(paper / 100), PERCENT1(max(PAPER_KEPT_PERCENT.values()) / 100), []
    for model, rows in models.measured.items():
        if rows.first.sparse is not None:
            kept, change = rows.spread("sparse_kept_fraction"), rows.spread("sparse_ce_increase_pct")
            parts.append(f"{model} keeps {kept.summary(PERCENT)}, {ratio(100 * kept.mean / paper)} the "
                         f"paper's {low}{' on average' if kept.n > 1 else ''}, at T = {rows.first.context_length}"
                         f" with CE {change.summary(SIGNED_PERCENT)} vs dense")
    if not parts:
        return f"No model was post-trained here, so nothing compares with the paper's {low}–{high} of edges kept."
    return (f"The paper reports {low}–{high} of edges kept at no loss increase, on models with far longer contexts; "
            f"here " + "; ".join(parts) + ".")


def edges_kept_claim(models: EdgesStudy) -> Claim:
    """Chapter 3's evidence for claim ``edges_kept``, which chapter 2 judges: no verdict of its own."""
    return Claim("edges_kept", edges_sentence(models), {"models": list(models.rows), "measured": list(models.measured),
                                                        "train_seeds": models.seeds, "spread": spread_record(models)})


def measure_models(model_names, post_train, seeds=(0,), settings: EdgeSettings = EdgeSettings()) -> EdgesStudy:
    """:func:`measure_model` for every name, post-training those in ``post_train``: for each of ``seeds`` where the
    weights depend on one (post-trained, or a toy trained here), else once. A pending model is not tried again."""
    unknown = sorted(set(post_train) - set(model_names))
    if unknown:
        raise ValueError(f"post_train: {unknown} are not in model_names {list(model_names)}")
    seeds, cards, rows = list(seeds), [], {}
    if not seeds:
        raise ValueError("seeds: need at least one training seed")
    for name in model_names:
        trained, toy, measured = name in post_train, zoo.entry_for(name).source == "toy", []
        for index, seed in enumerate(seeds if trained or toy else [None]):  # a downloaded model has one card
            card, row = measure_model(name, post_train=trained, seed=seed, settings=settings, card=toy or index == 0)
            cards += [card] if card is not None else []
            measured.append(row)
            if not row.measured:
                break
        rows[name] = Seeds(tuple(measured))
    return EdgesStudy(seeds=seeds, cards=tuple(cards), rows=rows)


def measure_model(name: str, *, post_train: bool, seed: int | None = 0, threads: int | None = None,
                  settings: EdgeSettings = EdgeSettings(), card: bool = True) -> tuple[ModelCard | None, EdgesAndLoss]:
    """``name``'s card (None without ``card``) and row for training seed ``seed`` (None: none, loaded as seed 0):
    the post-trained model's run, else the dense model gated untrained. ``threads``: train at another thread count."""
    train_seed, card_seed = 0 if seed is None else seed, seed if zoo.entry_for(name).source == "toy" else None
    try:
        row = None
        if post_train:
            pair = load_pair(name, seed=train_seed, threads=threads, dense_steps=settings.dense_steps,
                             sparse_steps=settings.sparse_steps, recipe=settings.recipe)
            if isinstance(pair, Unavailable):
                raise FileNotFoundError(pair.reason)
            loaded, row = pair.dense, _post_trained_row(pair, seed)
        else:
            overrides = pretrain_overrides(name, settings.dense_steps, train_seed, threads)
            loaded = zoo.load(name, progress=False, cache_dir=settings.cache_dir, **overrides)
        measured_card = measure_card(name, loaded, settings, card_seed) if card else None
        row = row or _gated_row(name, loaded, settings, seed)  # after the card: the gate sparsifies the model
    except (zoo.HubUnavailableError, FileNotFoundError) as error:
        reason = str(error).splitlines()[0]
        pending = ModelCard(model=name, status="pending", reason=reason, text=zoo.entry_for(name).text,
                            seed=card_seed) if card else None
        return pending, EdgesAndLoss(model=name, status="pending", post_trained=post_train, reason=reason, seed=seed)
    if math.isfinite(row.dense.ce):
        return measured_card, row
    raise RuntimeError(f"{name}: dense CE is not finite ({row.dense.ce})")


def _post_trained_row(pair: ModelPair, seed: int | None) -> EdgesAndLoss:
    sparse, run = pair.sparse, pair.sparse.run
    split = sparse.info["heldout_split"]
    length = sparse.data[split]["input_ids"].shape[1] if split in sparse.data else run.recipe.block_size
    heldout = f"the {split} split" if split in sparse.data else f"Shakespeare validation plays, blocks of {length}"
    return EdgesAndLoss(model=pair.name, status="measured", post_trained=True, seed=seed, heldout=heldout,
                        context_length=int(length), gate_bias=run.recipe.gate_bias, dense=run.dense, gated=run.before,
                        sparse=run.after, dense_sha256=pair.dense.provenance["weights_sha256"],
                        sparse_sha256=sparse.provenance["weights_sha256"], threads=sparse.provenance["threads"])


def _gated_row(name: str, loaded, settings: EdgeSettings, seed: int | None) -> EdgesAndLoss:
    heldout, data = heldout_blocks(loaded, settings.eval_blocks, settings.block_for(loaded), settings.cache_dir)
    dense = evaluate(loaded.model, data, settings.batch_size).ce
    sparsify(loaded.model, gate_bias=settings.gate_bias)
    gated = evaluate(loaded.model, data, settings.batch_size)
    return EdgesAndLoss(model=name, status="measured", post_trained=False, seed=seed, heldout=heldout,
                        context_length=int(data["input_ids"].shape[1]), gate_bias=float(settings.gate_bias),
                        dense=HeldOut(dense), gated=HeldOut(gated.ce, gated.edges),
                        dense_sha256=loaded.provenance["weights_sha256"], threads=loaded.provenance["threads"])
