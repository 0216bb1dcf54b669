"""``make gpu-check``: what a lent GPU machine must measure, in one command of at most five minutes on one H200.

1. The CUDA-marked tests (tests/cuda: bf16 autocast, compiled and chunked gate, micro-batch search against the
   allocator's real limit, activation checkpointing).
2. The addition toy pretrained and post-trained on the device for a few hundred steps, killed (SIGKILL) after its
   first checkpoint and resumed: the resumed log must hold every step exactly once.
3. One post-training step of a random-init GPT-2-small (124M) and of a Llama-3.2-1B-shaped model at T = 1024,
   sparse and dense (SDPA), through the one training loop with ``grad_accum="auto"`` under an 80 GiB cap: step
   time, tokens/s, peak memory, the accumulation found, and whether the step fits.

Everything lands in results/benchmarks/gpu_check/metrics.json with provenance, and its line in the README's
benchmark block. ``--dry-run`` runs the same code on CPU at toy sizes into a temporary results folder (CI runs it,
so this script cannot rot); it measures nothing worth keeping. The machine needs torch, transformers and pytest;
nothing is downloaded (``make gpu-wheels`` packs what a machine without a registry lacks).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # runs from a checkout: nothing to install on the machine
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402

from common import machine  # noqa: E402

transformers.logging.set_verbosity_error()
GIB = 2**30
FULL = dict(toy_dense={}, toy_steps=300, toy_checkpoint_every=25, seq_len=1024, batch_rows=16, bench_steps=5,
            memory_cap_gib=80)
DRY = dict(toy_dense=dict(steps=20, batch_size=64), toy_steps=12, toy_checkpoint_every=3, seq_len=64,
           batch_rows=4, bench_steps=3, memory_cap_gib=80)


def model_configs(dry_run: bool) -> dict:
    """Random-init architectures of the paper's scale (or toy twins of them for a dry run)."""
    if dry_run:
        return {"gpt2-small": transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=512, n_positions=64),
                "llama-1b-shape": transformers.LlamaConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                                                           num_attention_heads=4, num_key_value_heads=2,
                                                           vocab_size=512, max_position_embeddings=64)}
    return {"gpt2-small": transformers.GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257,
                                                  n_positions=1024),
            "llama-1b-shape": transformers.LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                                       num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                                                       vocab_size=128256, max_position_embeddings=1024,
                                                       tie_word_embeddings=True)}


def cuda_tests(dry_run: bool) -> dict:
    """Run tests/cuda in a child pytest; counts from its JUnit report (on a GPU, a skipped test is a failure)."""
    import xml.etree.ElementTree as ElementTree

    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "junit.xml"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda",
                               "tests/cuda", f"--junitxml={report}"], cwd=REPO, capture_output=True, text=True)
        suite = ElementTree.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "ok": done.returncode == 0 and (dry_run or counts["skipped"] == 0), "seconds": time.perf_counter() - started,
            "tail": done.stdout[-2000:] if done.returncode else ""}


def toy_child(work: Path, device: str, dense: dict, steps: int, checkpoint_every: int) -> None:
    """One (possibly resumed) post-training run of the addition toy; writes ``work/summary.json`` at the end."""
    from spartan_core import zoo
    from spartan_core.training import RunFolder, SparseRecipe, post_train
    from spartan_core.zoo.registry import default_sparse_recipe, entry_for

    loaded = zoo.load("addition-4l", cache_dir=work / "models", progress=False, device=device, **dense)
    recipe = SparseRecipe.from_any({**asdict(default_sparse_recipe("addition-4l")), "steps": steps,
                                    "eval_every": max(1, steps // 3)})
    entry = entry_for("addition-4l")
    train_data, heldout = entry.sparse_data(loaded, recipe, work / "models")
    result = post_train(loaded.model, train_data, heldout, recipe, extra_metrics=entry.heldout_metrics,
                        folder=RunFolder(work / "run"), progress=False, device=device,
                        checkpoint_every=checkpoint_every)
    (work / "summary.json").write_text(json.dumps({"metrics": result.metrics, "wall_time_s": result.wall_time_s,
                                                   "dense_pretrain_s": loaded.info.get("train_wall_time_s")}))


def toy_kill_and_resume(device: str, sizes: dict) -> dict:
    """Post-train the toy in a child process, SIGKILL it after its first checkpoint, run it again to the end."""
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        command = [sys.executable, __file__, "--toy-child", str(work), "--device", device,
                   "--toy-dense", json.dumps(sizes["toy_dense"]), "--toy-steps", str(sizes["toy_steps"]),
                   "--toy-checkpoint-every", str(sizes["toy_checkpoint_every"])]
        marker = work / "run" / "geco" / "checkpoint" / "trainer.json"
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            while not marker.exists():
                if child.poll() is not None:
                    raise RuntimeError(f"toy run ended before its first checkpoint: {child.stderr.read()[-2000:]}")
                time.sleep(0.05)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        killed_at = json.loads(marker.read_text())["step"]
        resumed = subprocess.run(command, capture_output=True, text=True)
        if resumed.returncode:
            raise RuntimeError(f"resumed toy run failed: {resumed.stderr[-2000:]}")
        steps = [json.loads(line)["step"] for line in (work / "run" / "geco" / "log.jsonl").read_text().splitlines()]
        summary = json.loads((work / "summary.json").read_text())
    sparse = summary["metrics"]["sparse"]
    return {"steps": sizes["toy_steps"], "killed_at_step": killed_at,
            "resumed_ok": killed_at < sizes["toy_steps"] and steps == list(range(1, sizes["toy_steps"] + 1)),
            "kept_fraction": sparse.get("kept_fraction"), "exact_match": sparse.get("exact_match"),
            "dense_exact_match": summary["metrics"]["dense"].get("exact_match"),
            "post_train_s": summary["wall_time_s"], "total_s": time.perf_counter() - started}


def training_step(config, mode: str, device: torch.device, sizes: dict) -> dict:
    """Time ``bench_steps`` optimiser steps of one model (sparse or dense SDPA) through the training loop."""
    from spartan_core import sparsify
    from spartan_core.objective.base import Objective
    from spartan_core.objective.geco import GECO
    from spartan_core.objective.sparsity import SparsityUnderCE
    from spartan_core.training import TrainConfig, train
    from spartan_core.training.batches import find_grad_accum

    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model = (sparsify(model) if mode == "sparse" else model).to(device).train()
    ids = torch.randint(config.vocab_size, (sizes["batch_rows"] * 2, sizes["seq_len"]))
    data = {"input_ids": ids, "labels": ids.clone()}
    objective = SparsityUnderCE(GECO(tau=1.0)) if mode == "sparse" else Objective()
    run = TrainConfig(steps=sizes["bench_steps"], batch_size=sizes["batch_rows"], grad_accum="auto", lr=1e-5,
                      device=str(device), progress=False, keep_best=False)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    accum = find_grad_accum(model, data, run, objective)
    result = train(model, data, config=TrainConfig(**{**run.__dict__, "grad_accum": accum}), objective=objective)
    rates = sorted(r["tokens_per_s"] for r in result.history[1:]) or [result.history[0]["tokens_per_s"]]
    tokens_per_s = rates[len(rates) // 2]
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    parameters = sum(p.numel() for p in model.parameters())
    del model, result
    return {"parameters": parameters, "grad_accum": accum,
            "micro_batch": sizes["batch_rows"] // accum, "tokens_per_s": tokens_per_s,
            "step_s": sizes["batch_rows"] * sizes["seq_len"] / tokens_per_s,
            "peak_gib": None if peak is None else peak / GIB,
            "fits_cap": None if peak is None else peak <= sizes["memory_cap_gib"] * GIB}


def step_benchmarks(device: torch.device, sizes: dict, dry_run: bool) -> dict:
    """Sparse and dense-SDPA steps of each architecture under the memory cap (the cap makes "fits in 80 GiB" a
    measurement on a larger GPU: the allocator refuses anything above it, and the micro-batch search adapts)."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, sizes["memory_cap_gib"] * GIB / total))
    found = {}
    for name, config in model_configs(dry_run).items():
        runs = {mode: training_step(config, mode, device, sizes) for mode in ("dense_sdpa", "sparse")}
        found[name] = {**runs, "sparse_over_dense_step": runs["sparse"]["step_s"] / runs["dense_sdpa"]["step_s"]}
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, toy sizes, temporary results folder")
    parser.add_argument("--toy-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--device", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--toy-dense", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--toy-steps", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--toy-checkpoint-every", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.toy_child is not None:
        toy_child(args.toy_child, args.device, json.loads(args.toy_dense), args.toy_steps, args.toy_checkpoint_every)
        return 0
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); --dry-run checks the script on "
              "CPU", file=sys.stderr)
        return 2
    if args.dry_run and not os.environ.get("SPARTAN_RESULTS"):
        os.environ["SPARTAN_RESULTS"] = tempfile.mkdtemp(prefix="gpu-check-dry-run-")
    from companion.results import ResultsDir

    device = torch.device("cpu" if args.dry_run else "cuda")
    sizes = DRY if args.dry_run else FULL
    started = time.perf_counter()
    results = ResultsDir("benchmarks", "gpu_check", {"dry_run": args.dry_run, **sizes})
    tests = cuda_tests(args.dry_run)
    results.record(cuda_tests=tests)
    print(f"gpu-check: CUDA tests {tests['passed']} passed, {tests['failures'] + tests['errors']} failed, "
          f"{tests['skipped']} skipped", flush=True)
    toy = toy_kill_and_resume(device.type, sizes)
    results.record(toy=toy)
    print(f"gpu-check: addition toy killed at step {toy['killed_at_step']} and resumed "
          f"({'ok' if toy['resumed_ok'] else 'FAILED'}), kept fraction {toy['kept_fraction']}", flush=True)
    steps = step_benchmarks(device, sizes, args.dry_run)
    wall = time.perf_counter() - started
    llama, gpt2 = steps["llama-1b-shape"], steps["gpt2-small"]
    line = (f"GPU check{' (dry run on CPU, toy sizes)' if args.dry_run else ''}: T={sizes['seq_len']} step "
            f"sparse/dense-sdpa GPT-2-small {gpt2['sparse_over_dense_step']:.2f}x, Llama-1B-shape "
            f"{llama['sparse_over_dense_step']:.2f}x ({llama['sparse']['tokens_per_s']:.0f} tokens/s sparse"
            + (f", peak {llama['sparse']['peak_gib']:.1f} GiB at micro-batch {llama['sparse']['micro_batch']}, "
               f"{'fits' if llama['sparse']['fits_cap'] else 'does not fit'} in {sizes['memory_cap_gib']} GiB"
               if llama["sparse"]["peak_gib"] is not None else "")
            + f"); CUDA tests {tests['passed']}/{tests['tests']} passed ({tests['skipped']} skipped); toy kill-and-resume "
            f"{'ok' if toy['resumed_ok'] else 'FAILED'}; {wall:.0f} s; {machine()}")
    results.record(line=line, machine=machine(), steps=steps, wall_time_s=wall,
                   ok=tests["ok"] and toy["resumed_ok"])
    results.finish()
    print(line)
    print(f"gpu-check: wrote {results.path / 'metrics.json'}")
    return 0 if tests["ok"] and toy["resumed_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
