"""Hub names and local directories. Offline (or without network) a hub name that is not already in the local
Hugging Face cache fails within seconds with one line."""

from __future__ import annotations

from pathlib import Path

from .._util import HubUnavailableError, hub_unavailable_reason
from .cache import quiet_transformers
from .loaded import LoadedModel, to_device, used

__all__ = ["load_hub"]


def load_hub(name: str, *, overrides: dict) -> LoadedModel:
    """A hub name or a local directory. Offline (or without network) a hub name that is not already in the local
    Hugging Face cache fails within seconds with :class:`HubUnavailableError` (one line)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    overrides = dict(overrides)
    device = overrides.pop("device", "auto")
    local = Path(name).expanduser()
    if local.is_dir():
        with quiet_transformers():
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
    return used(LoadedModel(name=name, model=to_device(model, device).eval(), tokenizer=tokenizer, data={},
                            info=info))
