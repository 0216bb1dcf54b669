"""Chapter 3's question: how many token->token attention edges does a model keep, and at what loss? Each number
is reported as a mean with its min-max over training seeds, beside the paper's reported fractions."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .. import zoo
from ..claims import Claim
from ..formatting import (DECIMAL1, DECIMAL2, DECIMAL4, PERCENT, PERCENT1, PERCENT_WHOLE, SIGNED_NATS,
                          SIGNED_PERCENT, SIGNIFICANT, counted, listing, ratio, seed_list)
from ..mechanism.sparsify import sparsify
from ..training.evaluate import HeldOut, evaluate
from .common import ModelPair, Unavailable, heldout_blocks, load_pair, pretrain_overrides
from .model_cards import EdgeSettings, ModelCard, measure_card
from .seeds import Seeds, spread_table, table_cell

# The paper's percent of attention edges kept at no loss increase (typed from the paper, shown labelled as such).
PAPER_KEPT_PERCENT = {"v1, models up to 1B parameters": 0.3, "v2+, models up to 7B parameters": 0.4}

# The paper's models were trained at contexts of about this many tokens: its kept fractions in kept keys per query,
# the measure that does not depend on the context length (a query at position i has i causal keys).
PAPER_CONTEXT = 1024
PAPER_KEYS_PER_QUERY = {label: percent / 100 * (PAPER_CONTEXT + 1) / 2 for label, percent in PAPER_KEPT_PERCENT.items()}

# A CE change is given in percent only against a CE of at least this many nats: the addition toy's few thousandths
# of a nat make any percent of them noise, so it is read in nats and exact match.
MIN_CE_FOR_PERCENT = 0.1

# The numbers of a row that the chapter reports over training seeds (keys of EdgesAndLoss.row()). The untrained gate
# is compared with the dense checkpoint (the same weights); the sparse model with its compute-matched control. τ is
# the constraint the post-training held, on the sampled-mask training CE: not on the held-out scale of the CEs.
ROW_NUMBERS = ("tau", "dense_ce", "gated_ce", "gated_ce_change", "gated_ce_increase_pct", "gated_kept_fraction",
               "gated_kept_per_query", "control_ce", "sparse_ce", "sparse_ce_change", "sparse_ce_increase_pct",
               "sparse_kept_fraction", "sparse_kept_per_query", "dense_exact_match", "control_exact_match",
               "sparse_exact_match")


def _percent_change(value: float, reference: float) -> float | None:
    """``value`` against ``reference`` in percent, None when the reference CE is too small for a percent to mean
    anything (:data:`MIN_CE_FOR_PERCENT`)."""
    return 100.0 * (value / reference - 1.0) if reference >= MIN_CE_FOR_PERCENT else None


@dataclass(frozen=True)
class EdgesAndLoss:
    """One model's row for one training seed: held-out numbers of the dense model, of the untrained gate and of
    the sparse post-trained model and its compute-matched control where there are (pending with the reason, never
    with numbers)."""

    model: str
    status: str  # "measured" or "pending"
    post_trained: bool
    reason: str | None = None
    seed: int | None = None  # the training seed (None: the weights do not depend on one here)
    heldout: str | None = None
    context_length: int | None = None
    gate_bias: float | None = None
    tau: float | None = None  # the CE target the post-training held (None: not post-trained)
    dense: HeldOut | None = None
    gated: HeldOut | None = None
    sparse: HeldOut | None = None
    control: HeldOut | None = None
    dense_sha256: str | None = None  # the weights' SHA-256 (None where not hashed, as for hub models)
    sparse_sha256: str | None = None
    threads: int | None = None  # the torch CPU threads the sparse model (else the dense toy) was trained with

    @property
    def measured(self) -> bool:
        return self.status == "measured"

    def row(self) -> dict[str, float]:
        """The numbers of :data:`ROW_NUMBERS` this row has, flat: the untrained gate's CE change is against the dense
        checkpoint, the sparse model's against its control (none without one)."""
        values = {"dense_ce": self.dense.ce, "dense_exact_match": self.dense.exact_match_all} if self.dense else {}
        values["tau"] = self.tau
        for kind, held, reference in (("gated", self.gated, self.dense), ("sparse", self.sparse, self.control)):
            if held is not None:
                values.update({f"{kind}_ce": held.ce, f"{kind}_kept_fraction": held.kept_fraction,
                               f"{kind}_kept_per_query": held.kept_per_query})
            if held is not None and reference is not None:
                values.update({f"{kind}_ce_change": held.ce - reference.ce,
                               f"{kind}_ce_increase_pct": _percent_change(held.ce, reference.ce)})
        if self.control is not None:
            values.update(control_ce=self.control.ce, control_exact_match=self.control.exact_match_all)
        values["sparse_exact_match"] = self.sparse.exact_match_all if self.sparse else None
        return {key: float(values[key]) for key in ROW_NUMBERS if values.get(key) is not None}

    @property
    def shown(self) -> str:
        """The model the figures and sentences show: ``sparse`` where post-trained, else ``gated``."""
        return "gated" if self.sparse is None else "sparse"

    def to_record(self) -> dict:
        """Flat fields for metrics.json: ``dense_ce``, ``gated_kept_fraction``, ``sparse_per_head``, ..."""
        record = {k: v for k, v in asdict(self).items()
                  if v is not None and k not in ("dense", "gated", "sparse", "control")}
        record.update(self.row())
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
                  "τ (training CE)": table_cell(s.get("tau"), SIGNIFICANT),
                  "dense CE": table_cell(s.get("dense_ce"), SIGNIFICANT),
                  "control CE": table_cell(s.get("control_ce"), SIGNIFICANT)}
        for kind, label, reference in (("gated", "untrained gate", "dense"), ("sparse", "sparse", "control")):
            values.update({f"{label}: CE": table_cell(s.get(f"{kind}_ce"), SIGNIFICANT),
                           f"{label}: CE vs {reference} (nats)": table_cell(s.get(f"{kind}_ce_change"), SIGNIFICANT),
                           f"{label}: CE vs {reference} %": table_cell(s.get(f"{kind}_ce_increase_pct"),
                                                                       SIGNED_PERCENT),
                           f"{label}: kept %": table_cell(s.get(f"{kind}_kept_fraction"), PERCENT),
                           f"{label}: keys/query": table_cell(s.get(f"{kind}_kept_per_query"), SIGNIFICANT)})
        return {**values, **{f"{kind} exact match": table_cell(s.get(f"{kind}_exact_match"), PERCENT1)
                             for kind in ("dense", "control", "sparse")}}

    table = pd.DataFrame([shown(model, rows.first) for model, rows in models.rows.items()]).set_index("model")
    return table.dropna(axis=1, how="all")


def paper_table() -> pd.DataFrame:
    return pd.DataFrame({"kept %": list(PAPER_KEPT_PERCENT.values()),
                         f"keys/query at T ≈ {PAPER_CONTEXT}": [DECIMAL2(k) for k in PAPER_KEYS_PER_QUERY.values()],
                         "CE change": "loss kept (no increase)"},
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


def _ce_change(s: dict, kind: str) -> str:
    """A CE change in nats, with its percent where the reference CE is large enough for one to mean anything."""
    nats = s[f"{kind}_ce_change"].summary(SIGNED_NATS)
    percent = s.get(f"{kind}_ce_increase_pct")
    return nats if percent is None else f"{nats} ({percent.inline(SIGNED_PERCENT)})"


def _model_sentence(models: EdgesStudy, model: str, first: EdgesAndLoss) -> str:
    if not first.measured:
        return f"{model}: pending ({first.reason.split(': ')[0]})"
    s = models.measured[model].spreads(ROW_NUMBERS)
    if "sparse_kept_fraction" in s:
        kept = (f"{model}: {s['sparse_kept_fraction'].summary(PERCENT)} of edges kept "
                f"({s['sparse_kept_per_query'].summary(DECIMAL2)} keys/query, T = {first.context_length})")
        if "sparse_ce_change" not in s:
            return f"{kept}, held-out CE {s['sparse_ce'].summary(DECIMAL4)} (no control measured)"
        matched = "" if "sparse_exact_match" not in s else (
            f", exact match {s['sparse_exact_match'].summary(PERCENT1)} against "
            f"{s['control_exact_match'].summary(PERCENT1)}")
        return f"{kept}, held-out CE {_ce_change(s, 'sparse')} vs its compute-matched control{matched}"
    why = "untrained gate only" + ("" if first.seed is not None else ", not trained here: no training seed")
    return f"{model} ({why}): {s['gated_kept_fraction'].summary(PERCENT1)} kept, CE {_ce_change(s, 'gated')} vs dense"


def edges_sentence(models: EdgesStudy) -> str:
    """Per model, its kept edges and CE change over its training seeds: the edges-kept row of the claims table."""
    return "; ".join(_model_sentence(models, model, rows.first) for model, rows in models.rows.items()) or \
        "no model was measured"


def spread_sentence(models: EdgesStudy) -> str:
    """How far apart the training seeds of each model land (the spread the edges-vs-loss figure shows)."""
    parts = []
    for model, rows in models.measured.items():
        kind = rows.first.shown
        kept, label = rows.spread(f"{kind}_kept_fraction"), "sparse model" if kind == "sparse" else "untrained gate"
        if kept.n == 1:
            parts.append(f"{model}'s {label} is a single point (one model, no training seed)")
            continue
        times = f", {ratio(kept.high / kept.low)} from lowest to highest" if kept.low > 0 else ""
        change = "" if f"{kind}_ce_change" not in rows.first.row() else (
            f", at {SIGNED_NATS(rows.spread(f'{kind}_ce_change').low)} to "
            f"{SIGNED_NATS(rows.spread(f'{kind}_ce_change').high)} of CE against "
            f"{'its control' if kind == 'sparse' else 'dense'}")
        parts.append(f"{'both seeds' if kept.n == 2 else f'the {kept.n} seeds'} of {model}'s {label} keep "
                     f"{PERCENT(kept.low)}–{PERCENT(kept.high)} of edges{times}{change}")
    text = "; ".join(parts) or "no model was measured, so there is no spread to show"
    return text[0].upper() + text[1:] + "."


def paper_sentence(models: EdgesStudy) -> str:
    """How the post-trained models compare with the paper's reported fractions, in kept keys per query (a fraction
    depends on the context length: the same keys per query are a larger fraction of a shorter context)."""
    low, high = min(PAPER_KEYS_PER_QUERY.values()), max(PAPER_KEYS_PER_QUERY.values())
    paper = (f"{PERCENT1(min(PAPER_KEPT_PERCENT.values()) / 100)}–{PERCENT1(max(PAPER_KEPT_PERCENT.values()) / 100)}"
             f" of edges kept, about {DECIMAL1(low)}–{DECIMAL1(high)} keys per query at T ≈ {PAPER_CONTEXT}")
    parts = []
    for model, rows in models.measured.items():
        if rows.first.sparse is not None:
            keys = rows.spread("sparse_kept_per_query")
            parts.append(f"{model} keeps {keys.summary(DECIMAL2)} keys per query at T = {rows.first.context_length},"
                         f" {ratio(keys.mean / low)} the paper's {DECIMAL1(low)}")
    if not parts:
        return f"No model was post-trained here, so nothing compares with the paper's {paper}."
    return f"The paper reports {paper}; here " + "; ".join(parts) + "."


# "No loss increase", as the rule reads it: the sparse model's mean held-out CE at most this far above its control's
# (a fraction of the control's CE, plus a few ten-thousandths of a nat for CEs near zero) ...
LOSS_TOLERANCE, LOSS_TOLERANCE_NATS = 0.01, 5e-4
# ... and, where the task scores whole answers, an exact match at most this far below the control's.
EXACT_MATCH_TOLERANCE = 0.005


def _post_trained_verdicts(models: EdgesStudy) -> dict[str, dict]:
    """Per post-trained model with a control: its mean kept keys per query, whether they are within the paper's
    (v1, at T ≈ 1024), and whether its held-out loss (and exact match) stayed at its control's."""
    paper = min(PAPER_KEYS_PER_QUERY.values())
    judged = {}
    for model, rows in models.measured.items():
        s = rows.spreads(ROW_NUMBERS)
        if "sparse_ce_change" not in s:
            continue
        loss_kept = s["sparse_ce_change"].mean <= LOSS_TOLERANCE * s["control_ce"].mean + LOSS_TOLERANCE_NATS
        if "sparse_exact_match" in s and "control_exact_match" in s:
            loss_kept &= s["sparse_exact_match"].mean >= s["control_exact_match"].mean - EXACT_MATCH_TOLERANCE
        keys = s["sparse_kept_per_query"].mean
        judged[model] = {"keys_per_query": keys, "within_paper_keys": keys <= paper, "loss_kept": bool(loss_kept),
                         "ce_vs_control": s["sparse_ce_change"].to_dict()}
    return judged


def _headline(models: EdgesStudy, model: str) -> str:
    s = models.measured[model].spreads(ROW_NUMBERS)
    return (f"{model} (T = {models.rows[model].first.context_length}): {s['sparse_kept_per_query'].short(DECIMAL2)} "
            f"keys per query, CE {s['sparse_ce_change'].short(SIGNED_NATS)} vs control")


def edges_kept_claim(models: EdgesStudy) -> Claim:
    """The edges-kept row of the claims table, judged on every post-trained model against its compute-matched
    control, in kept keys per query (comparable across context lengths)."""
    judged = _post_trained_verdicts(models)
    both = [model for model, j in judged.items() if j["within_paper_keys"] and j["loss_kept"]]
    loss_kept = [model for model, j in judged.items() if j["loss_kept"]]
    verdict = ("cannot test here" if not judged else "reproduced" if len(both) == len(judged) else
               "partly" if loss_kept else "not reproduced")
    paper = min(PAPER_KEYS_PER_QUERY.values())
    rule = (f"reproduced when every post-trained model keeps at most the paper's {DECIMAL2(paper)} keys per query "
            f"({PERCENT1(min(PAPER_KEPT_PERCENT.values()) / 100)} at T ≈ {PAPER_CONTEXT}) with a mean held-out CE "
            f"at most {PERCENT_WHOLE(LOSS_TOLERANCE)} (+{LOSS_TOLERANCE_NATS} nats) above its compute-matched "
            f"control's and, where scored, exact match at most {PERCENT1(EXACT_MATCH_TOLERANCE)} below it; partly "
            "when some model keeps its control's loss; cannot test here without a post-trained model")
    headline = "; ".join(_headline(models, model) for model in judged) or "no post-trained model"
    return Claim("edges_kept", edges_sentence(models),
                 {"models": list(models.rows), "measured": list(models.measured), "train_seeds": models.seeds,
                  "post_trained": judged, "spread": spread_record(models)}, verdict, rule, headline)


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
                             sparse_steps=settings.sparse_steps, recipe=settings.recipe, control=threads is None)
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
                        context_length=int(length), gate_bias=run.recipe.gate_bias, tau=run.tau, dense=run.dense,
                        gated=run.before,
                        sparse=run.after, control=pair.control, dense_sha256=pair.dense.provenance["weights_sha256"],
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
