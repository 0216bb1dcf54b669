"""Reading attention off dense and sparse models: maps, per-class averages, carry selectivity, edge/loss rows.

The book's chapters on edges (03), attention patterns (04) and the addition toy (05) share these:

* :func:`attention_maps` returns every head's attention weights for some inputs; for a sparsified model these are
  the *kept* (masked, not renormalised) weights, so ``weight > 0`` is exactly the deterministic mask.
* :func:`attention_by_class` averages weights and kept-edge frequencies over a dataset, separately per class
  (the addition toy's carry classes), streamed in batches.
* :func:`carry_selectivity` asks, for every head and every (answer query, operand key) edge, how much more often
  it is used when a carry is needed than when it is not.
* :func:`draw_attention_graph` draws the paper's Figure-1 style token x layer graph.
* :func:`edges_and_loss` is one row of the edges-and-loss table: dense CE, untrained-gate CE and kept edges,
  sparse post-trained CE and kept edges, or ``pending`` with the reason when a model cannot be loaded here.
* :func:`model_card` says what a dense model is and how good it is (held-out CE, baselines, a second text).
* :func:`circuit_study` gives the dense and sparse model of a circuit task (06) and its prompt-set generator.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from .data import addition

__all__ = [
    "POSITION_NAMES",
    "ANSWER_QUERIES",
    "OPERAND_KEYS",
    "CARRY_FLAGS",
    "CARRY_RELEVANT_KEYS",
    "PAPER_KEPT_PERCENT",
    "ClassMeans",
    "parse_problem",
    "attention_maps",
    "attention_by_class",
    "carry_selectivity",
    "top_reads",
    "draw_attention_graph",
    "heads_above",
    "induction_probe",
    "random_token_range",
    "token_labels",
    "heldout_blocks",
    "edges_and_loss",
    "model_card",
    "CIRCUIT_TASKS",
    "PAPER_CIRCUIT_RATIOS",
    "CircuitStudy",
    "circuit_study",
]

# Addition toy positions: a = a1 a0, b = b1 b0, sum = s4 s3 s2 s1 s0 (s4 = ten-thousands ... s0 = units).
POSITION_NAMES = ("a1", "a0", "+", "b1", "b0", "=", "s4", "s3", "s2", "s1", "s0")
# Query positions whose next-token prediction is an answer digit ("=" predicts s4, ..., s1 predicts s0).
ANSWER_QUERIES = tuple(range(addition.PROMPT_LEN - 1, addition.SEQ_LEN - 1))
OPERAND_KEYS = (0, 1, 3, 4)
# Which carry classes (indices into addition.CARRY_CLASSES) have each kind of carry.
CARRY_FLAGS = {"units": (1, 3), "tens": (2, 3)}
# The operand digits that decide each carry: the units digits decide the units carry, the tens digits the tens carry.
CARRY_RELEVANT_KEYS = {"units": (1, 4), "tens": (0, 3)}
# The paper's own numbers (typed from the paper, shown labelled as the paper's): kept attention edges in percent at
# no loss increase, v1 (models up to 1B) and v2+ (up to 7B).
PAPER_KEPT_PERCENT = {"v1, up to 1B": 0.3, "v2+, up to 7B": 0.4}


def parse_problem(text: str) -> tuple[int, int]:
    """``"53+21"`` -> ``(53, 21)``: two operands 0..99 joined by ``+``; anything else is refused."""
    parts = str(text).strip().split("+")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) <= 99 for p in parts):
        raise ValueError(f"examples: expected problems like '53+21' with operands 0..99, got {text!r}")
    return int(parts[0]), int(parts[1])


@contextlib.contextmanager
def _eager(model) -> Iterator[None]:
    """``output_attentions`` needs eager (or our gated) attention: switch sdpa/flash models for the call."""
    impl = getattr(model.config, "_attn_implementation", "eager")
    switch = impl not in ("eager", "spartan")
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(impl)


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def attention_maps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Float [B, layers, heads, T, T] attention weights (CPU) in eval mode; kept weights for a sparsified model.
    Grouped-query models report one map per query head."""
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids: expected [batch, time], got shape {tuple(input_ids.shape)}")
    device = _device(model)
    was_training = model.training
    model.eval()
    try:
        with _eager(model):
            out = model(input_ids=input_ids.to(device), output_attentions=True, use_cache=False,
                        attention_mask=None if attention_mask is None else attention_mask.to(device))
    finally:
        model.train(was_training)
    return torch.stack([a.float().cpu() for a in out.attentions], dim=1)


@dataclass
class ClassMeans:
    """Per-class averages over a dataset: ``weight`` [G, L, H, T, T] mean attention weight, ``kept`` the fraction
    of rows in which the edge's weight is non-zero (for a sparsified model: kept by the deterministic mask; for a
    dense model always 1 on causal edges), ``count`` [G] rows per class."""

    weight: torch.Tensor
    kept: torch.Tensor
    count: torch.Tensor

    def pooled(self, classes: Sequence[int], measure: str = "weight") -> torch.Tensor:
        """[L, H, T, T] average of ``measure`` over the rows of the listed classes (rows weighted equally)."""
        if measure not in ("weight", "kept"):
            raise ValueError(f"measure: expected 'weight' or 'kept', got {measure!r}")
        values = getattr(self, measure)
        index = torch.as_tensor(list(classes), dtype=torch.long)
        counts = self.count[index].double()
        if counts.sum() == 0:
            return torch.full(values.shape[1:], float("nan"), dtype=torch.float64)
        return (values[index].double() * counts[:, None, None, None, None]).sum(0) / counts.sum()

    def overall(self, measure: str = "weight") -> torch.Tensor:
        return self.pooled(range(len(self.count)), measure)


@torch.no_grad()
def attention_by_class(model, input_ids: torch.Tensor, classes: torch.Tensor, n_classes: int,
                       batch_size: int = 500) -> ClassMeans:
    """Average attention weights and kept-edge frequencies per class over all rows of ``input_ids`` [N, T]
    (``classes`` [N] in 0..n_classes-1), streamed in batches of ``batch_size``."""
    if len(classes) != len(input_ids):
        raise ValueError(f"classes: need one class per row ({len(input_ids)}), got {len(classes)}")
    if len(classes) and (int(classes.min()) < 0 or int(classes.max()) >= n_classes):
        raise ValueError(f"classes: values must lie in 0..{n_classes - 1}")
    weight_sum = kept_sum = None
    count = torch.bincount(classes.long(), minlength=n_classes).double()
    for start in range(0, len(input_ids), batch_size):
        maps = attention_maps(model, input_ids[start:start + batch_size]).double()
        group = classes[start:start + batch_size].long()
        if weight_sum is None:
            weight_sum = torch.zeros(n_classes, *maps.shape[1:], dtype=torch.float64)
            kept_sum = torch.zeros_like(weight_sum)
        weight_sum.index_add_(0, group, maps)
        kept_sum.index_add_(0, group, (maps > 0).double())
    if weight_sum is None:
        raise ValueError("input_ids: no rows to average")
    denominator = count.clamp_min(1)[:, None, None, None, None]
    return ClassMeans(weight=weight_sum / denominator, kept=kept_sum / denominator, count=count)


def _position_label(position: int) -> str:
    return POSITION_NAMES[position]


def _predicts(query: int) -> str:
    return POSITION_NAMES[query + 1] if query + 1 < len(POSITION_NAMES) else "-"


def carry_selectivity(means: ClassMeans, measure: str = "kept") -> pd.DataFrame:
    """One row per (carry kind, layer, head, answer query, operand key): ``measure`` averaged over the problems
    with that carry (``with_carry``) and without it (``without_carry``), their difference (``selectivity``) and
    whether the key is a digit that decides that carry (``relevant``). Sorted by selectivity, largest first."""
    rows = []
    layers, heads = means.weight.shape[1:3]
    for kind, flagged in CARRY_FLAGS.items():
        others = [c for c in range(len(means.count)) if c not in flagged]
        with_carry, without_carry = means.pooled(flagged, measure), means.pooled(others, measure)
        for layer in range(layers):
            for head in range(heads):
                for query in ANSWER_QUERIES:
                    for key in OPERAND_KEYS:
                        w, wo = float(with_carry[layer, head, query, key]), float(without_carry[layer, head, query, key])
                        rows.append({
                            "carry": kind, "layer": layer, "head": head, "query": query,
                            "query_token": _position_label(query), "predicts": _predicts(query), "key": key,
                            "key_token": _position_label(key), "with_carry": w, "without_carry": wo,
                            "selectivity": w - wo, "relevant": key in CARRY_RELEVANT_KEYS[kind],
                        })
    frame = pd.DataFrame(rows)
    return frame.sort_values("selectivity", ascending=False, kind="stable").reset_index(drop=True)


def top_reads(means: ClassMeans, layer: int, measure: str = "weight", k: int = 2,
              queries: Sequence[int] = ANSWER_QUERIES) -> pd.DataFrame:
    """For each head of ``layer`` and each query position: the ``k`` keys with the largest average ``measure``
    over all problems, as ``"key (value)"`` strings, plus the total over all keys."""
    values = means.overall(measure)[layer]
    rows = []
    for head in range(values.shape[0]):
        for query in queries:
            row_values = values[head, query, : query + 1]
            order = torch.argsort(row_values, descending=True, stable=True)[:k]
            rows.append({
                "head": head, "query": query, "query_token": _position_label(query), "predicts": _predicts(query),
                **{f"read_{i + 1}": f"{_position_label(int(j))} ({float(row_values[j]):.2f})"
                   for i, j in enumerate(order)},
                f"total_{measure}": float(row_values.sum()),
            })
    return pd.DataFrame(rows)


def draw_attention_graph(ax, maps, tokens: Sequence[str], *, min_weight: float = 0.02, title: str | None = None,
                         head_colours: Sequence[str] | None = None):
    """The paper's Figure-1 view of one sequence: tokens across, residual-stream levels up (embedding, then one
    level per layer). Head h of layer l draws a line from key j at level l to query i at level l+1 for every
    weight >= ``min_weight``, coloured by head, opacity and width growing with the weight. ``maps``:
    [layers, heads, T, T] (dense weights, or the kept weights of a sparsified model). Returns the number of
    lines drawn."""
    from . import plots

    w = plots.to_numpy(maps)
    if w.ndim != 4 or w.shape[-1] != w.shape[-2]:
        raise ValueError(f"maps: expected [layers, heads, T, T], got shape {w.shape}")
    layers, heads, length = w.shape[0], w.shape[1], w.shape[-1]
    if len(tokens) != length:
        raise ValueError(f"tokens: need {length} labels, got {len(tokens)}")
    from matplotlib.collections import LineCollection
    from matplotlib.colors import to_rgba

    colours = list(head_colours or plots.SEQUENCE)
    drawn = 0
    offsets = np.linspace(-0.18, 0.18, heads) if heads > 1 else np.zeros(1)
    for layer in range(layers):
        for head in range(heads):
            queries, keys = np.nonzero(np.tril(w[layer, head]) >= min_weight)
            if not len(queries):
                continue
            strength = np.minimum(w[layer, head, queries, keys], 1.0)
            x = offsets[head]
            segments = [[(j + x, layer), (i + x, layer + 1)] for i, j in zip(queries, keys)]
            rgba = np.array([to_rgba(colours[head % len(colours)], alpha=0.15 + 0.85 * float(v)) for v in strength])
            ax.add_collection(LineCollection(segments, colors=rgba, linewidths=0.4 + 2.2 * strength,
                                             capstyle="round", zorder=1))
            drawn += len(segments)
    grid_x, grid_y = np.meshgrid(np.arange(length), np.arange(layers + 1))
    ax.scatter(grid_x.ravel(), grid_y.ravel(), s=10, color="#333333", zorder=2)
    ax.set_xticks(range(length), list(tokens))
    ax.set_yticks(range(layers + 1), ["emb"] + [f"L{layer}" for layer in range(layers)])
    ax.set_xlim(-0.6, length - 0.4)
    ax.set_ylim(-0.3, layers + 0.3)
    ax.grid(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.tick_params(length=0)
    if title:
        ax.set_title(title)
    for head in range(heads):
        ax.plot([], [], color=colours[head % len(colours)], lw=2, label=f"head {head}")
    return drawn


def heads_above(scores: torch.Tensor, threshold: float) -> list[str]:
    """Names ``L{layer}H{head}`` of the heads whose score is at least ``threshold``, strongest first."""
    flat = [(float(scores[layer, head]), layer, head)
            for layer in range(scores.shape[0]) for head in range(scores.shape[1])]
    return [f"L{layer}H{head}" for score, layer, head in sorted(flat, key=lambda t: (-t[0], t[1], t[2]))
            if score >= threshold]


def random_token_range(tokenizer, vocab_size: int) -> tuple[int, int | None]:
    """(lowest id, start token) for random-token sequences: ids above the tokenizer's special tokens (when those
    sit at the bottom of the vocabulary), starting with its BOS (or end-of-text) token when it has one."""
    special = [int(i) for i in getattr(tokenizer, "all_special_ids", []) or [] if i is not None]
    low = max(special) + 1 if special and max(special) < vocab_size // 2 else 0
    bos = getattr(tokenizer, "bos_token_id", None)
    return low, getattr(tokenizer, "eos_token_id", None) if bos is None else bos


def induction_probe(tokenizer, vocab_size: int, n_sequences: int, half_length: int, seed: int = 0) -> dict:
    """Repeated random tokens for :func:`spartan_core.data.induction.induction_scores`, drawn above the
    tokenizer's special-token ids and starting with its end-of-text (or BOS) token when it has one."""
    from .data.induction import induction_data

    low, bos = random_token_range(tokenizer, vocab_size)
    data = induction_data(n_sequences, half_length, vocab_size, seed=seed, low=low, bos_token_id=bos)
    return {**data, "attention_mask": torch.ones_like(data["input_ids"])}


def token_labels(tokenizer, ids) -> list[str]:
    """One printable label per token id (each decoded alone; newlines shown as ``\\n``), for map axes."""
    ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    return [tokenizer.decode([int(i)]).replace("\n", "\\n") or f"<{int(i)}>" for i in ids]


# ------------------------------------------------------------------------------------------ edges and loss


def heldout_blocks(loaded, max_blocks: int, block_size: int, cache_dir=None, spread: bool = True) -> tuple[str, dict]:
    """(name, token-block data) of at most ``max_blocks`` held-out rows of a loaded model: from its own ``test``
    or ``validation`` split when it has one, else blocks of ``block_size`` tokens of the Shakespeare validation
    plays in the model's own tokenizer. Rows are evenly spread over the split (``spread``) or the first ones."""
    name = next((split for split in ("test", "validation") if split in loaded.data), None)
    if name is not None:
        data = {k: v for k, v in loaded.data[name].items() if k in ("input_ids", "labels", "attention_mask")}
    else:
        from .data.text import shakespeare_data

        data = shakespeare_data(loaded.tokenizer, block_size=block_size, cache_dir=cache_dir)["validation"]
    total = len(data["input_ids"])
    count = min(max_blocks, total)
    rows = torch.linspace(0, total - 1, count).round().long() if spread else torch.arange(count)
    data = {k: v[rows] for k, v in data.items()}
    if name is None:
        name = f"Shakespeare validation plays, {count} blocks of {block_size}"
    elif count < total:
        name = f"{name} ({count} of {total} rows)"
    return name, data


def _edge_fields(prefix: str, edges) -> dict:
    if edges is None:
        return {}
    edges = edges if isinstance(edges, dict) else edges.to_dict()
    return {f"{prefix}_kept_fraction": edges["kept_fraction"], f"{prefix}_kept_per_query": edges["kept_per_query"],
            f"{prefix}_per_layer": edges["per_layer"], f"{prefix}_per_head": edges["per_head"]}


def edges_and_loss(name: str, *, post_train: bool, recipe: dict | None = None, dense_overrides: dict | None = None,
                   eval_blocks: int = 16, block_size: int = 128, gate_bias: float = 0.0, batch_size: int = 64,
                   progress: bool = False, cache_dir=None) -> dict:
    """One model's row of the edges-and-loss table.

    Always: dense held-out CE and the *untrained* deterministic gate (``sparsify`` with ``gate_bias``, no
    training): its CE and kept edges. With ``post_train``: the sparse post-trained model of
    :func:`spartan_core.models.load_sparse` (``recipe`` over the model's default) measured on the same held-out
    data, with per-layer and per-head kept fractions. A model that cannot be loaded here (hub offline, package
    missing) gives ``status="pending"`` and the reason, never numbers.
    """
    from . import models
    from .mechanism.sparsify import sparsify
    from .train import evaluate

    row = {"model": name, "post_trained": bool(post_train)}
    try:
        if post_train:
            loaded = models.load_sparse(name, recipe, progress=progress, dense_overrides=dense_overrides,
                                        cache_dir=cache_dir)
        else:
            loaded = models.load(name, progress=progress, cache_dir=cache_dir, **(dense_overrides or {}))
    except (models.HubUnavailableError, FileNotFoundError) as error:
        return {**row, "status": "pending", "reason": str(error).splitlines()[0]}
    row["status"] = "measured"
    row["n_params"] = sum(p.numel() for p in loaded.model.parameters())
    if post_train:
        metrics = loaded.info["metrics"]
        split = next(k for k in metrics["sparse"] if k.endswith("_ce"))
        heldout = split[: -len("_ce")]
        length = (loaded.data[heldout]["input_ids"].shape[1] if heldout in loaded.data
                  else loaded.info["recipe"]["block_size"])
        row.update(heldout=heldout, context_length=int(length),
                   dense_ce=metrics["dense"][split], gated_ce=metrics["gated_before_training"][split],
                   sparse_ce=metrics["sparse"][split], steps=loaded.info["recipe"]["steps"],
                   tau=loaded.info["tau"], tau_reference=loaded.info["tau_reference"])
        row.update(_edge_fields("gated", metrics["gated_before_training"].get("edges")))
        row.update(_edge_fields("sparse", metrics["sparse"].get("edges")))
        for kind in ("dense", "sparse"):
            if f"{heldout}_exact_match" in metrics[kind]:
                row[f"{kind}_exact_match"] = metrics[kind][f"{heldout}_exact_match"]["all"]
    else:
        model = loaded.model
        heldout_name, data = heldout_blocks(loaded, eval_blocks, block_size, cache_dir)
        row.update(heldout=heldout_name, context_length=int(data["input_ids"].shape[1]))
        row["dense_ce"] = evaluate(model, data, batch_size)["ce"]
        sparsify(model, gate_bias=gate_bias)
        gated = evaluate(model, data, batch_size)
        row["gated_ce"] = gated["ce"]
        row.update(_edge_fields("gated", gated["edges"]))
    for kind in ("gated", "sparse"):
        if f"{kind}_ce" in row and row["dense_ce"] > 0:
            row[f"{kind}_ce_increase_pct"] = 100.0 * (row[f"{kind}_ce"] / row["dense_ce"] - 1.0)
    row["gate_bias"] = loaded.info["recipe"]["gate_bias"] if post_train else gate_bias
    if not math.isfinite(row["dense_ce"]):
        raise RuntimeError(f"{name}: dense CE is not finite ({row['dense_ce']})")
    return row


def model_card(name: str, *, eval_blocks: int = 16, kjv_blocks: int = 0, block_size: int = 128,
               dense_overrides: dict | None = None, batch_size: int = 64, cache_dir=None) -> dict:
    """What a dense model of the registry is and how good it is, so a reader can judge the models the chapters
    sparsify: its source, size and first-use cost, its held-out CE (the whole held-out split for models trained
    here, else ``eval_blocks`` Shakespeare validation blocks), the bigram baseline for the Shakespeare LM, and
    for language models the CE on ``kjv_blocks`` blocks of a second text, the KJV. ``pending`` with the reason when
    the model cannot be loaded here."""
    from . import models
    from .data.text import kjv_data
    from .train import evaluate

    row = {"model": name}
    try:
        loaded = models.load(name, progress=False, cache_dir=cache_dir, **(dense_overrides or {}))
    except (models.HubUnavailableError, FileNotFoundError) as error:
        return {**row, "status": "pending", "reason": str(error).splitlines()[0]}
    info, metrics = loaded.info, loaded.info.get("metrics") or {}
    row.update(status="measured", source=info.get("source", ""), n_params=sum(p.numel() for p in loaded.model.parameters()),
               first_use_s=info.get("train_wall_time_s", info.get("convert_wall_time_s")))
    heldout_ce = next((metrics[k] for k in ("validation_ce", "test_ce") if k in metrics), None)
    if heldout_ce is None:
        row["heldout"], data = heldout_blocks(loaded, eval_blocks, block_size, cache_dir)
        heldout_ce = evaluate(loaded.model, data, batch_size)["ce"]
    else:
        row["heldout"] = "the whole held-out split"
    row["heldout_ce"] = heldout_ce
    if "bigram" in metrics:
        row["bigram_ce"] = metrics["bigram"]["ce"]
    if kjv_blocks and name != "addition-4l":
        kjv = kjv_data(loaded.tokenizer, block_size=block_size, max_blocks=kjv_blocks, cache_dir=cache_dir)
        row["kjv_ce"] = evaluate(loaded.model, kjv, batch_size)["ce"]
        row["kjv_blocks"] = int(len(kjv["input_ids"]))
    return row


# ------------------------------------------------------------------------------------------ circuit size

CIRCUIT_TASKS = ("addition", "induction", "ioi", "greater-than")
# The paper's own ranges (typed from the paper, shown labelled as the paper's): dense / sparse circuit size at 90 %
# explained effect, over its tasks (Greater-Than and IOI on GPT-2, Docstring and a long IOI on OLMo-7B).
PAPER_CIRCUIT_RATIOS = {"heads": (1.4, 4.5), "edges": (5.4, 97.0)}


@dataclass
class CircuitStudy:
    """One circuit task on one model family: the dense and sparse models, which model, and the prompt sets."""

    task: str
    model: str
    models: dict
    make_task: object
    sparse_info: dict


def circuit_study(task: str, *, model: str, n_prompts: int, recipe: dict | None = None,
                  dense_overrides: dict | None = None, induction_half: int = 8, cache_dir=None) -> CircuitStudy:
    """Dense and sparse (``models.load_sparse`` with ``recipe``) copies of ``model`` and ``make_task(seed)`` giving
    ``n_prompts`` clean/corrupted pairs of ``task``. Raises ``HubUnavailableError`` when ``model`` cannot be
    loaded here (the chapter then lists the task as pending)."""
    from . import circuits, models

    if task not in CIRCUIT_TASKS:
        raise ValueError(f"task: choose from {CIRCUIT_TASKS}, got {task!r}")
    overrides = dense_overrides if model in models.TOY_MODELS else None
    sparse = models.load_sparse(model, recipe, progress=False, dense_overrides=overrides, cache_dir=cache_dir)
    dense = models.load(model, progress=False, cache_dir=cache_dir, **(overrides or {}))
    for loaded in (dense, sparse):
        loaded.model.eval()
    if task == "addition":
        def make_task(seed):
            return circuits.addition_task(n_prompts, seed=seed)
    elif task == "induction":
        vocab = dense.model.config.vocab_size
        low, bos = random_token_range(dense.tokenizer, vocab)

        def make_task(seed):
            return circuits.induction_task(vocab, n_prompts, half=induction_half, seed=seed, low=low,
                                           prefix=() if bos is None else (bos,))
    else:
        make = circuits.ioi_task if task == "ioi" else circuits.greater_than_task

        def make_task(seed):
            return make(n_prompts, seed=seed)
    return CircuitStudy(task, model, {"dense": dense.model, "sparse": sparse.model}, make_task, sparse.info)
