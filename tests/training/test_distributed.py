"""Post-training over several processes (gloo on this CPU), data parallel (DDP on accelerate) and sharded (FSDP):
two processes train the weights one process trains at the same global batch, a killed two-process run resumes, and
a run that forgets to average the objective's step statistics across processes is caught by the same comparison."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_run.py")
STEPS = 6


def launch(out, processes, accum, variant="ok", pause=0.0, port=29611):
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
               f"--master_port={port}", str(SCRIPT), str(out), str(STEPS), str(accum), variant, str(pause)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def workers(out) -> list[int]:
    """The pids of the training processes writing into ``out`` (torchrun starts each worker in its own session)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and str(SCRIPT).encode() in command and str(out).encode() in command:
            found.append(int(entry.name))
    return found


def kill_everything(run, out) -> None:
    """SIGKILL the launcher and every worker of the run, as a lost node would, and wait until they are gone."""
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    deadline = time.time() + 30
    while (alive := workers(out)) and time.time() < deadline:
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    assert not workers(out), "a worker of the killed run survived"


def finished(out, processes, accum, variant="ok", port=29611):
    run = launch(out, processes, accum, variant, port=port)
    output, _ = run.communicate(timeout=240)
    assert run.returncode == 0, output[-3000:]
    return torch.load(out / "final.pt"), json.loads((out / "history.json").read_text())


def same_run(a, b):
    (weights_a, history_a), (weights_b, history_b) = a, b
    for key in ("ce", "expected_fraction", "beta_used"):
        got, want = [r[key] for r in history_a], [r[key] for r in history_b]
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6), key
    for name, value in weights_b.items():
        torch.testing.assert_close(weights_a[name], value, atol=1e-5, rtol=1e-4, msg=name)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: one process, the global batch of 8 rows in 2 micro-batches of 4."""
    return finished(tmp_path_factory.mktemp("one"), processes=1, accum=2)


@pytest.mark.parametrize("layout,port", [("ok", 29612), ("fsdp", 29616)])
def test_two_processes_train_the_weights_of_one_at_the_same_global_batch(one_process, tmp_path, layout, port):
    same_run(finished(tmp_path, processes=2, accum=1, variant=layout, port=port), one_process)


def test_two_sharded_processes_accumulating_micro_batches_train_the_weights_of_one(tmp_path):
    """Two micro-batches of 2 rows per process against one process's four: the sharded gradients are reduced once
    per step (not per micro-batch), and every micro-batch draws its masks wherever it runs."""
    reference = finished(tmp_path / "one", processes=1, accum=4, port=29619)
    same_run(finished(tmp_path / "two", processes=2, accum=2, variant="fsdp", port=29617), reference)


def test_a_run_that_does_not_average_the_gate_statistics_is_caught(one_process, tmp_path):
    with pytest.raises(AssertionError):
        same_run(finished(tmp_path, processes=2, accum=1, variant="broken", port=29613), one_process)


def test_sharded_lora_adapters_train_as_on_one_process(tmp_path):
    """Frozen base weights and trainable adapters share the sharded units; merged, they equal one process's."""
    reference = finished(tmp_path / "one", processes=1, accum=2, variant="lora", port=29620)
    same_run(finished(tmp_path / "two", processes=2, accum=1, variant="fsdp-lora", port=29621), reference)


@pytest.mark.parametrize("layout,port", [("ok", 29614), ("fsdp", 29618)])
def test_a_killed_two_process_run_resumes_to_the_same_weights(one_process, tmp_path, layout, port):
    marker = tmp_path / "checkpoint" / "trainer.json"
    run = launch(tmp_path, processes=2, accum=1, variant=layout, pause=1.0, port=port)
    try:
        deadline = time.time() + 120
        while not (marker.exists() and json.loads(marker.read_text())["step"] >= 2):
            assert run.poll() is None and time.time() < deadline, run.stdout.read()[-3000:]
            time.sleep(0.05)
    finally:
        kill_everything(run, tmp_path)
    killed_at = json.loads(marker.read_text())["step"]
    assert 2 <= killed_at < STEPS and not (tmp_path / "final.pt").exists()
    same_run(finished(tmp_path, processes=2, accum=1, variant=layout, port=port + 100), one_process)
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))


def test_fsdp_without_several_processes_is_refused_in_one_line_before_any_work(monkeypatch):
    from spartan_core.training import TrainConfig, train
    from spartan_core.training.distributed import Processes

    with pytest.raises(ValueError, match=r"^fsdp: shards the weights over several processes; launch with torchrun "
                                         r"--nproc_per_node N or accelerate launch --num_processes N \(N >= 2\)$"):
        Processes(engine=False).sharding(True)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # accelerate launch --use_fsdp, one process
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"^fsdp: "):
        train(model, {"input_ids": torch.zeros(4, 3, dtype=torch.long)}, config=TrainConfig(steps=1, batch_size=2))


def test_a_sharded_run_directory_resumes_only_sharded(monkeypatch):
    """Its checkpoints keep the optimizer state by parameter name: another layout is refused by the manifest, in one
    line naming fsdp, while unsharded manifests stay as they were (no fsdp key)."""
    from spartan_core.training import TrainConfig
    from spartan_core.training.checkpoint import manifest_difference, run_manifest

    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    plain = run_manifest(TrainConfig(steps=2), None)
    sharded = run_manifest(TrainConfig(steps=2, fsdp=True), None)
    assert "fsdp" not in plain["train"]
    assert manifest_difference(sharded, plain) == "train.fsdp is True there, '<unset>' now"
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # accelerate launch --use_fsdp is the same layout
    assert manifest_difference(sharded, run_manifest(TrainConfig(steps=2), None)) is None
