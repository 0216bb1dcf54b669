"""Shared set-up for the ratio benchmarks: one small GPT-2-architecture model and a fixed batch."""

from __future__ import annotations

import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers

transformers.logging.set_verbosity_error()


def record(name: str, line: str, parameters: dict, **ratios) -> None:
    """Print the benchmark's one line and keep it, with provenance, in results/benchmarks/<name>/."""
    from companion.results import ResultsDir

    print(line)
    results = ResultsDir("benchmarks", name, parameters)
    results.record(line=line, machine=machine(), **ratios)
    results.finish()


def machine() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return f"{device}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def small_model(attn: str = "eager", layers=4, width=128, heads=4, vocab=2048, positions=256):
    config = transformers.GPT2Config(n_layer=layers, n_embd=width, n_head=heads, vocab_size=vocab,
                                     n_positions=positions, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0,
                                     bos_token_id=0, eos_token_id=0)
    config._attn_implementation = attn
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)


def batch(size=32, length=128, vocab=2048):
    g = torch.Generator().manual_seed(0)
    return torch.randint(vocab, (size, length), generator=g)


def _timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def median_times(fns: dict, repeats=7, warmup=2) -> dict:
    """Median wall time of each function, measured in interleaved rounds so that load from other processes
    on a shared machine hits every contender alike; the order rotates each round, so no contender always runs
    right after the same other one (allocator and cache state)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    names = list(fns)
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(_timed(fns[name]))
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def saved_activation_bytes(fn, model=None) -> int:
    """Bytes of the storages autograd saves for backward during ``fn()``: the activation memory of a training
    step, measurable on any device (on CUDA the benchmark also reports the allocator's peak). A storage saved by
    several operations counts once, and ``model``'s parameters (saved by every matmul) not at all."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()} if model is not None else set()
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())
