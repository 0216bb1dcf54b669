"""``make gpu-check`` runs on a lent GPU machine only now and then; its dry run (CPU, toy sizes) runs here so the
script cannot rot between loans: every part runs, and what it writes has the fields the README line reads."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def dry_run(tmp_path, *args):
    env = {**os.environ, "SPARTAN_RESULTS": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_the_gpu_check_dry_run_runs_every_part_and_records_it(tmp_path):
    done = dry_run(tmp_path, "--dry-run")
    assert done.returncode == 0, done.stderr[-3000:]
    stored = json.loads((tmp_path / "benchmarks" / "gpu_check" / "metrics.json").read_text())
    metrics = stored["metrics"]
    assert stored["provenance"]["status"] == "complete" and stored["provenance"]["parameters"]["dry_run"]
    assert metrics["cuda_tests"]["tests"] >= 4 and metrics["cuda_tests"]["skipped"] == metrics["cuda_tests"]["tests"]
    toy = metrics["toy"]
    assert toy["resumed_ok"] and 0 < toy["killed_at_step"] < toy["steps"] and 0 < toy["kept_fraction"] <= 1
    for model in ("gpt2-small", "llama-1b-shape"):
        for mode in ("dense_sdpa", "sparse"):
            run = metrics["steps"][model][mode]
            assert run["tokens_per_s"] > 0 and run["micro_batch"] * run["grad_accum"] == 4
        assert metrics["steps"][model]["sparse_over_dense_step"] > 0
    assert metrics["ok"] and metrics["line"].startswith("GPU check (dry run on CPU, toy sizes)")
    assert metrics["line"] in done.stdout


def test_the_gpu_check_without_a_gpu_says_so_in_one_line(tmp_path):
    done = dry_run(tmp_path)
    assert done.returncode == 2 and not (tmp_path / "benchmarks").exists()
    assert done.stderr.strip().splitlines() == [
        "gpu-check: no CUDA device here (torch.cuda.is_available() is False); --dry-run checks the script on CPU"]
