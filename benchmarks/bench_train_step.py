"""Post-training step time and activation memory, sparse vs dense, same model and batch, one process.

Prints one line per comparison. Dense baselines: transformers' eager attention (the same arithmetic minus the
gates) and PyTorch's fused SDPA.
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
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ids = batch(args.batch, args.length).to(device)
    steps, memory = {}, {}
    for name in ("eager", "sdpa", "sparse"):
        model = small_model("sdpa" if name == "sdpa" else "eager").to(device).train()
        if name == "sparse":
            sparsify(model)
        steps[name] = step_fn(model, ids, name == "sparse")
        memory[name] = saved_activation_bytes(lambda: model(input_ids=ids, labels=ids, use_cache=False))
    times = median_times(steps, repeats=args.repeats)
    shape = f"GPT-2 arch 4x128, batch {args.batch}x{args.length}"
    parameters = vars(args)
    record("train_step", f"train step time sparse/dense-eager {times['sparse'] / times['eager']:.2f}x  "
           f"sparse/dense-sdpa {times['sparse'] / times['sdpa']:.2f}x  "
           f"(sparse {times['sparse'] * 1e3:.0f} ms, eager {times['eager'] * 1e3:.0f} ms, "
           f"sdpa {times['sdpa'] * 1e3:.0f} ms; {shape}; {machine()})", parameters,
           ratio_vs_eager=times["sparse"] / times["eager"], ratio_vs_sdpa=times["sparse"] / times["sdpa"],
           seconds=times)
    record("activation_memory", f"activation memory sparse/dense-eager {memory['sparse'] / memory['eager']:.2f}x  "
           f"sparse/dense-sdpa {memory['sparse'] / memory['sdpa']:.2f}x  "
           f"(sparse {memory['sparse'] / 2**20:.0f} MiB, eager {memory['eager'] / 2**20:.0f} MiB, "
           f"sdpa {memory['sdpa'] / 2**20:.0f} MiB saved for backward; {shape})", parameters,
           ratio_vs_eager=memory["sparse"] / memory["eager"], ratio_vs_sdpa=memory["sparse"] / memory["sdpa"],
           bytes=memory)


if __name__ == "__main__":
    main()
