"""Edge counting vs a plain evaluation forward pass, same model and batches, one process.

Prints one line: count_edges over N batches against the same forward passes without counting (the sparse
model with statistics off) and against the dense model's eager forward.
"""

from __future__ import annotations

import argparse

import torch

from common import batch, machine, median_times, record, small_model
from spartan_core import count_edges, sparsify
from spartan_core.mechanism.sparsify import sparse_state


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ids = batch(32, 128).to(device)
    batches = [{"input_ids": ids}] * args.batches
    dense_model = small_model().to(device).eval()
    sparse_model = sparsify(small_model().to(device)).eval()

    @torch.no_grad()
    def forward(model, record=True):
        state = sparse_state(model)
        if state is not None:
            state.record = record
        for b in batches:
            model(input_ids=b["input_ids"], use_cache=False)
        if state is not None:
            state.record = True

    times = median_times({
        "count": lambda: count_edges(sparse_model, batches),
        "sparse_forward": lambda: forward(sparse_model, record=False),
        "dense_forward": lambda: forward(dense_model),
    }, repeats=args.repeats)
    record("count_edges", f"count_edges/plain sparse eval forward {times['count'] / times['sparse_forward']:.2f}x  "
           f"count_edges/dense eager eval forward {times['count'] / times['dense_forward']:.2f}x  "
           f"(count {times['count'] * 1e3:.0f} ms, sparse fwd {times['sparse_forward'] * 1e3:.0f} ms, "
           f"dense fwd {times['dense_forward'] * 1e3:.0f} ms; {args.batches} batches of 32x128; {machine()})",
           vars(args), ratio_vs_sparse_forward=times["count"] / times["sparse_forward"],
           ratio_vs_dense_forward=times["count"] / times["dense_forward"], seconds=times)


if __name__ == "__main__":
    main()
