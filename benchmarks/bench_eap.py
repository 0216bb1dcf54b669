"""EAP cost against one training step, and the exact edge patching it replaces, same model and batch, one process.

Prints one line: EAP (one corrupted forward, one clean forward with gradient probes, one backward) and EAP-IG
(``--steps`` interpolation points) as multiples of one training step (forward + backward + AdamW step) of the
same model on the same batch, and exact patching (one forward per edge, batched) as a multiple of EAP. The model
has the addition toy's architecture (GPT-2, 4 layers, d=64, 4 heads, 12-token vocabulary), randomly initialised:
timings do not depend on what the weights learnt.
"""

from __future__ import annotations

import argparse

import torch
import transformers

from common import machine, median_times, record
from spartan_core.circuits import ComponentGraph, addition_task, attribute, exact_edge_scores
from spartan_core.data.addition import SEQ_LEN, VOCAB_SIZE


def addition_architecture(layers: int) -> transformers.GPT2LMHeadModel:
    config = transformers.GPT2Config(n_layer=layers, n_embd=64, n_head=4, vocab_size=VOCAB_SIZE,
                                     n_positions=SEQ_LEN, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="EAP-IG interpolation points")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = addition_architecture(args.layers).to(device)
    task = addition_task(args.prompts, seed=0)
    graph = ComponentGraph(model)
    ids = task.clean_ids.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        model.train()
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.eval()

    times = median_times({
        "train_step": train_step,
        "eap": lambda: attribute(graph, task, "eap", batch_size=args.prompts),
        "eap_ig": lambda: attribute(graph, task, "eap-ig", steps=args.steps, batch_size=args.prompts),
    }, repeats=args.repeats)
    times.update(median_times({"exact": lambda: exact_edge_scores(graph, task, batch_size=args.prompts)},
                              repeats=1, warmup=0))
    eap_vs_step = times["eap"] / times["train_step"]
    ig_vs_step = times["eap_ig"] / times["train_step"]
    exact_vs_eap = times["exact"] / times["eap"]
    record(
        "eap",
        f"EAP/training step {eap_vs_step:.2f}x  EAP-IG({args.steps})/training step {ig_vs_step:.2f}x  "
        f"exact patching/EAP {exact_vs_eap:.0f}x  (step {times['train_step'] * 1e3:.0f} ms, EAP "
        f"{times['eap'] * 1e3:.0f} ms, EAP-IG {times['eap_ig'] * 1e3:.0f} ms, exact {times['exact']:.1f} s for "
        f"{graph.n_edges} edges; {args.layers}-layer d=64 GPT-2, {args.prompts} addition prompts; {machine()})",
        vars(args), eap_vs_train_step=eap_vs_step, eap_ig_vs_train_step=ig_vs_step, exact_vs_eap=exact_vs_eap,
        n_edges=graph.n_edges, seconds=times,
    )


if __name__ == "__main__":
    main()
