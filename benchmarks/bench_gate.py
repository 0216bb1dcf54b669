"""One gated attention call (forward and backward, sampled masks) against the alternatives, one process.

Prints one line: the call against PyTorch's fused causal SDPA on the same q, k, v; the gate's torch.compile path
(``compiled=True``, what ``SPARTAN_COMPILE=1`` selects) against eager, with its first call's compile time; an
evaluation call (no gradient, thresholded) through the fused-kernel path against the reference rows; and the share
of the eager call spent drawing the logistic noise of the sampled masks.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import machine, median_times, record
from spartan_core.mechanism import gate
from spartan_core.mechanism.gate import AttentionPath, causal_allowed, gated_attention


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, args.heads, args.length, args.head_dim)
    q, k, v = (torch.randn(shape, generator=g).to(device).requires_grad_() for _ in range(3))
    allowed = causal_allowed(args.batch, args.length, args.length, None, device)
    scores = torch.empty(args.batch, args.heads, args.length, args.length, device=device)

    def gate_step(**paths):
        def step():
            out, _, stats = gated_attention(q, k, v, allowed, sample=True, path=AttentionPath(**paths))
            (out.square().mean() + stats.expected_fraction).backward()
        return step

    def evaluation(need_weights):
        def call():
            with torch.no_grad():
                gated_attention(q, k, v, allowed, path=AttentionPath(need_weights=need_weights))
        return call

    def sdpa_step():
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).square().mean().backward()

    def noise():
        torch.logit(torch.empty_like(scores).uniform_(), eps=1e-6)

    gate_step(compiled=True)()
    compile_s = gate._COMPILED_ROWS.compile_seconds
    times = median_times({"gate": gate_step(), "compiled": gate_step(compiled=True), "sdpa": sdpa_step,
                          "noise": noise, "eval_fused": evaluation(False), "eval_reference": evaluation(True)},
                         repeats=args.repeats)
    parameters = vars(args)
    record("gate_call", f"gated attention call (fwd+bwd, sampled) / causal SDPA {times['gate'] / times['sdpa']:.2f}x  "
           f"eager/compiled {times['gate'] / times['compiled']:.2f}x (first call {compile_s:.0f} s)  "
           f"eval fused/reference {times['eval_fused'] / times['eval_reference']:.2f}x  "
           f"noise draw {times['noise'] / times['gate']:.0%} of the eager call  "
           f"(gate {times['gate'] * 1e3:.0f} ms, compiled {times['compiled'] * 1e3:.0f} ms, "
           f"sdpa {times['sdpa'] * 1e3:.0f} ms, noise {times['noise'] * 1e3:.1f} ms; q, k, v {list(shape)}; "
           f"{machine()})", parameters,
           ratio_vs_sdpa=times["gate"] / times["sdpa"], eager_over_compiled=times["gate"] / times["compiled"],
           compile_s=compile_s, eval_fused_over_reference=times["eval_fused"] / times["eval_reference"],
           noise_share=times["noise"] / times["gate"], seconds=times)


if __name__ == "__main__":
    main()
