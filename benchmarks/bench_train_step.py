"""Post-training step time and activation memory, sparse vs dense, same model and batch, one process.

Prints one line per comparison. Dense baselines: transformers' eager attention (the same arithmetic minus the
gates) and PyTorch's fused SDPA. Step time at the batch's length; activation memory (what autograd keeps for
backward) at each of ``--memory-lengths`` with the same tokens per batch, where long calls take the gate's
query-chunked path.
"""

from __future__ import annotations

import argparse

import torch

from common import batch, machine, median_times, record, saved_activation_bytes, small_model
from spartan_core import expected_fraction, sparsify


def step_fn(model, ids, sparse: bool):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        output = model(input_ids=ids, labels=ids, use_cache=False)
        loss = output.loss + (1e-3 * expected_fraction(model) if sparse else 0.0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--memory-lengths", type=int, nargs="+", default=[128, 512, 1024])
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ids = batch(args.batch, args.length).to(device)
    steps, models = {}, {}
    for name in ("eager", "sdpa", "sparse"):
        model = small_model("sdpa" if name == "sdpa" else "eager", positions=max(args.memory_lengths)).to(device)
        models[name] = sparsify(model.train()) if name == "sparse" else model.train()
        steps[name] = step_fn(model, ids, name == "sparse")
    times = median_times(steps, repeats=args.repeats)
    shape = f"GPT-2 arch 4x128, batch {args.batch}x{args.length}"
    parameters = vars(args)
    record("train_step", f"train step time sparse/dense-eager {times['sparse'] / times['eager']:.2f}x  "
           f"sparse/dense-sdpa {times['sparse'] / times['sdpa']:.2f}x  "
           f"(sparse {times['sparse'] * 1e3:.0f} ms, eager {times['eager'] * 1e3:.0f} ms, "
           f"sdpa {times['sdpa'] * 1e3:.0f} ms; {shape}; {machine()})", parameters,
           ratio_vs_eager=times["sparse"] / times["eager"], ratio_vs_sdpa=times["sparse"] / times["sdpa"],
           seconds=times)
    memory = {length: activation_memory(models, batch(args.batch * args.length // length, length).to(device))
              for length in args.memory_lengths}
    ratios = {length: {base: m["sparse"] / m[base] for base in ("eager", "sdpa")} for length, m in memory.items()}
    by_length = ", ".join(f"T={length} {r['sdpa']:.2f}x" for length, r in ratios.items())
    by_length_eager = ", ".join(f"T={length} {r['eager']:.2f}x" for length, r in ratios.items())
    longest = memory[max(memory)]
    record("activation_memory", f"activation memory sparse/dense-sdpa {by_length}  sparse/dense-eager "
           f"{by_length_eager}  (at T={max(memory)}: sparse {longest['sparse'] / 2**20:.0f} MiB, eager "
           f"{longest['eager'] / 2**20:.0f} MiB, sdpa {longest['sdpa'] / 2**20:.0f} MiB saved for backward; "
           f"GPT-2 arch 4x128, {args.batch * args.length} tokens per batch)", parameters,
           ratio_vs_sdpa={str(t): r["sdpa"] for t, r in ratios.items()},
           ratio_vs_eager={str(t): r["eager"] for t, r in ratios.items()},
           bytes={str(t): m for t, m in memory.items()})


def activation_memory(models: dict, ids: torch.Tensor) -> dict:
    """Bytes each model saves for backward in one training forward pass on ``ids``."""
    return {name: saved_activation_bytes(lambda: model(input_ids=ids, labels=ids, use_cache=False), model)
            for name, model in models.items()}


if __name__ == "__main__":
    main()
