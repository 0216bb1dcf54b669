"""The paper authors' released GPT-2 checkpoints, converted to transformers GPT-2 so that our edge counter and
circuit pipeline measure them beside the models post-trained here.

Their files are nanoGPT-style ``final.pth`` dicts: ``{"model": state_dict, "model_args": {...}}`` with PyTorch
``Linear`` weights ([out, in]; transformers' GPT-2 uses ``Conv1D``, [in, out]), the vocabulary padded to 50,304 rows
(kept, so logits match the original exactly; ids above 50,256 are never produced by GPT-2's tokenizer), and their
published evaluation mask ``scores > 0``, i.e. gate bias 0. Only ``torch.load(..., weights_only=True)`` reads them:
a file that needs arbitrary unpickling is refused.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .._util import HubUnavailableError, hub_unavailable_reason
from .cache import config_hash, locked, model_cache_dir, quiet_transformers
from .loaded import LoadedModel, to_device, used

__all__ = ["RELEASED", "RELEASED_DENSE", "load_released", "check_released_name", "convert_nanogpt", "read_nanogpt_checkpoint", "CheckpointRefused"]

# name -> (file in the hub repository, gate bias of the authors' evaluation mask)
RELEASED = {
    "ansonisl/SparseGPT2": ("final.pth", 0.0),
}
# name -> the dense model it was post-trained from (what the chapters put beside it)
RELEASED_DENSE = {
    "ansonisl/SparseGPT2": "gpt2",
}

_BLOCK_KEY = re.compile(r"^transformer\.h\.(\d+)\.(ln_1|attn\.c_attn|attn\.c_proj|ln_2|mlp\.c_fc|mlp\.c_proj)\."
                        r"(weight|bias)$")
_TOP_KEYS = {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias",
             "lm_head.weight"}
_LINEAR = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


AUTHORS = "ansonisl/"


def check_released_name(name: str) -> None:
    """Refuse, in one line, a name in the authors' hub namespace that is not a converted release."""
    if name.startswith(AUTHORS) and name not in RELEASED:
        raise ValueError(f"model: {name!r} is not a released checkpoint this loader converts "
                         f"(converted: {', '.join(RELEASED)})")


class CheckpointRefused(ValueError):
    """A checkpoint file that is not a weights-only nanoGPT GPT-2 checkpoint (one line says why)."""


def read_nanogpt_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict with any ``torch.compile`` prefix removed, model_args) of a nanoGPT checkpoint, read weights-only."""
    path = Path(path)
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # an unpickling refusal, a truncated file, not a torch file at all
        raise CheckpointRefused(f"checkpoint: {path} is not a weights-only torch file "
                                f"(torch.load(weights_only=True) refused it: {str(err).splitlines()[0]})") from err
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict) \
            or not isinstance(payload.get("model_args"), dict):
        raise CheckpointRefused(f"checkpoint: {path} is not a nanoGPT checkpoint (expected a dict with 'model' and "
                                f"'model_args')")
    state = {key.removeprefix("_orig_mod."): value for key, value in payload["model"].items()}
    return state, dict(payload["model_args"])


def convert_nanogpt(state: dict[str, torch.Tensor], model_args: dict):
    """A transformers ``GPT2LMHeadModel`` with the weights of a nanoGPT GPT-2 (biases zero where it had none)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    needed = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")
    missing = [k for k in needed if k not in model_args]
    if missing:
        raise CheckpointRefused(f"checkpoint: model_args lacks {', '.join(missing)}")
    unknown = sorted(k for k in state if k not in _TOP_KEYS and not _BLOCK_KEY.match(k)
                     and not re.match(r"^transformer\.h\.\d+\.attn\.bias$", k))  # nanoGPT's causal-mask buffer
    if unknown:
        raise CheckpointRefused(f"checkpoint: not a nanoGPT GPT-2 state dict (unexpected keys: {', '.join(unknown[:3])})")
    eos = 50256 if model_args["vocab_size"] > 50256 else None  # GPT-2's <|endoftext|>, when the vocabulary has it
    config = GPT2Config(n_layer=model_args["n_layer"], n_head=model_args["n_head"], n_embd=model_args["n_embd"],
                        n_positions=model_args["block_size"], vocab_size=model_args["vocab_size"],
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                        activation_function="gelu",  # nanoGPT's nn.GELU() is the exact GELU, not GPT-2's tanh one
                        bos_token_id=eos, eos_token_id=eos, tie_word_embeddings=True)
    model = GPT2LMHeadModel(config)
    own = model.state_dict()
    converted = {}
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if match is None and key not in _TOP_KEYS:
            continue  # the causal-mask buffer
        linear = match is not None and match.group(2) in _LINEAR and match.group(3) == "weight"
        converted[key] = value.t().contiguous() if linear else value
    converted.setdefault("lm_head.weight", converted.get("transformer.wte.weight"))
    for key, value in own.items():
        if key.endswith(".bias") and key not in converted:
            converted[key] = torch.zeros_like(value)  # nanoGPT with bias=False
    wrong = [k for k in own if k not in converted or converted[k] is None or converted[k].shape != own[k].shape]
    if wrong:
        got = converted.get(wrong[0])
        raise CheckpointRefused(f"checkpoint: {wrong[0]} is " + ("missing" if got is None else
                                f"{tuple(got.shape)}, the config gives {tuple(own[wrong[0]].shape)}"))
    model.load_state_dict({k: converted[k] for k in own})
    return model.eval()


def _download(name: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    reason = hub_unavailable_reason()
    try:
        return Path(hf_hub_download(name, filename, local_files_only=reason is not None))
    except Exception as err:
        if reason is None:
            raise
        raise HubUnavailableError(f"model {name!r}: {filename} is not in the local Hugging Face cache and the hub is "
                                  f"unavailable ({reason}): on a machine with internet run load({name!r}) once") from err


def load_released(name: str, *, cache_dir=None, overrides: dict) -> LoadedModel:
    """One of :data:`RELEASED`, downloaded once and converted once (cached as a transformers model). Like every
    :func:`~spartan_core.zoo.load`, the model comes dense; ``info["gate_bias"]`` is the bias of the authors'
    evaluation mask, the one to :func:`~spartan_core.sparsify` it with (the command line's default)."""
    from transformers import GPT2LMHeadModel

    from ..data.tokenizers import gpt2_tokenizer

    overrides = dict(overrides)
    device = overrides.pop("device", "auto")
    if overrides:
        raise ValueError(f"{sorted(overrides)[0]}: a released model takes no overrides (only device)")
    filename, gate_bias = RELEASED[name]
    final = model_cache_dir(cache_dir) / "released" / config_hash({"name": name, "file": filename})
    with locked(final):
        if not (final / "config.json").is_file():
            state, model_args = read_nanogpt_checkpoint(_download(name, filename))
            convert_nanogpt(state, model_args).save_pretrained(final)
    with quiet_transformers():
        model = GPT2LMHeadModel.from_pretrained(final)
    info = {"name": name, "source": f"released checkpoint {name}/{filename} (converted from nanoGPT)",
            "gate_bias": gate_bias, "n_params": sum(p.numel() for p in model.parameters()), "trained_now": False,
            "cache_dir": str(final)}
    return used(LoadedModel(name=name, model=to_device(model, device).eval(), tokenizer=gpt2_tokenizer(cache_dir),
                            data={}, info=info))
