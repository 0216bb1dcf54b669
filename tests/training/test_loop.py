import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_gpt2
from spartan_core import GECO, SparsityUnderCE, TrainConfig, TrainingDiverged, evaluate, sparsify, train
from spartan_core.training import CheckpointUnreadable, RunBusy, RunFolder, RunMismatch


def blocks(n=64, t=12, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, t), generator=g)
    ids[:, t // 2:] = ids[:, : t - t // 2]  # a repeat makes the data learnable
    return {"input_ids": ids}


def test_dense_training_reduces_loss_and_logs():
    data = blocks()
    model = tiny_gpt2()
    before = evaluate(model, data).ce
    result = train(model, data, config=TrainConfig(steps=40, batch_size=16, lr=3e-3, progress=False), eval_data=data)
    assert result.evals[-1]["eval_ce"] < before - 0.3
    assert len(result.history) == 40 and {"step", "ce", "lr", "tokens_per_s"} <= set(result.history[0])


def test_geco_post_training_logs_every_field_and_counts_edges(tmp_path):
    data = blocks()
    model = sparsify(tiny_gpt2())
    geco = GECO(tau=10.0, eta=1.0)
    config = TrainConfig(steps=6, batch_size=8, eval_every=3, progress=False)
    result = train(model, data, config=config, eval_data=data, objective=SparsityUnderCE(geco),
                   folder=RunFolder(tmp_path))
    lines = [json.loads(l) for l in open(tmp_path / "log.jsonl")]
    assert [l["step"] for l in lines] == list(range(1, 7))
    for key in ("ce", "ce_ema", "tau", "beta", "log_beta", "expected_fraction", "tokens_per_s"):
        assert key in lines[-1]
    assert "eval_kept_fraction" in lines[2] and "eval_kept_per_query" in lines[5]
    assert result.history[-1]["beta"] > result.history[0]["beta"]  # constraint slack: beta climbs
    assert result.best_step in (3, 6)


def _run(out_dir, steps, interrupt_at=None, controller="geco"):
    from spartan_core.objective.geco import PIGECO

    torch.manual_seed(0)
    model = sparsify(tiny_gpt2())
    geco = GECO(tau=4.0, eta=0.5) if controller == "geco" else PIGECO(tau=4.0, kp=20.0, eta=0.5)
    config = TrainConfig(steps=steps, batch_size=8, lr=1e-3, checkpoint_every=3, keep_best=False, progress=False)

    def stop(record):
        if record["step"] == interrupt_at:
            raise KeyboardInterrupt

    return train(model, blocks(), config=config, objective=SparsityUnderCE(geco), folder=RunFolder(out_dir),
                 on_step=stop), geco


@pytest.mark.parametrize("controller", ["geco", "pi"])
def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path, controller):
    full, full_geco = _run(tmp_path / "full", 8, controller=controller)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", 8, interrupt_at=5, controller=controller)
    assert json.load(open(tmp_path / "killed" / "checkpoint" / "trainer.json"))["step"] == 3
    torch.manual_seed(123)  # a fresh process would not share the RNG state: the checkpoint must restore it
    resumed, resumed_geco = _run(tmp_path / "killed", 8, controller=controller)
    assert resumed.resumed_from == 3
    a = load_file(tmp_path / "full" / "checkpoint" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed_geco.state_dict() == full_geco.state_dict()
    steps = [json.loads(l)["step"] for l in open(tmp_path / "killed" / "log.jsonl")]
    assert steps == list(range(1, 9))


def test_a_resumed_run_reports_the_training_time_of_every_segment(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, 8, interrupt_at=5)
    saved = json.load(open(tmp_path / "checkpoint" / "trainer.json"))
    assert saved["step"] == 3 and saved["wall_time_s"] > 0
    saved["wall_time_s"] = 1000.0  # as if the first segment had trained for 1000 s before its checkpoint
    (tmp_path / "checkpoint" / "trainer.json").write_text(json.dumps(saved))
    resumed, _ = _run(tmp_path, 8)
    assert resumed.resumed_from == 3 and 1000.0 < resumed.wall_time_s < 1000.0 + 600
    assert json.load(open(tmp_path / "checkpoint" / "trainer.json"))["wall_time_s"] > 1000.0


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path):
    model = tiny_gpt2()
    calls = {"n": 0}

    def poison(module, args, output):
        calls["n"] += 1
        if calls["n"] >= 3:
            return output * float("nan")

    model.transformer.h[0].register_forward_hook(lambda m, a, o: (poison(m, a, o[0]),) + tuple(o[1:])
                                                 if isinstance(o, tuple) else poison(m, a, o))
    config = TrainConfig(steps=5, batch_size=4, checkpoint_every=1, progress=False)
    with pytest.raises(TrainingDiverged, match="step 3: loss is nan.*Last finite checkpoint"):
        train(model, blocks(), config=config, folder=RunFolder(tmp_path))
    saved = json.load(open(tmp_path / "checkpoint" / "trainer.json"))
    assert saved["step"] == 2
    weights = load_file(tmp_path / "checkpoint" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


@pytest.mark.parametrize("kwargs, name", [
    (dict(steps=-1), "steps"), (dict(steps=0), "steps"), (dict(steps=5, lr=0), "lr"),
    (dict(steps=5, schedule="linear"), "schedule"), (dict(steps=5, batch_size=6, grad_accum=4), "batch_size"),
    (dict(steps=5, device="tpu9"), "device"),
])
def test_bad_training_parameters_are_refused_by_name(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        TrainConfig(**kwargs)


def test_unknown_parameter_and_bad_data_are_refused():
    with pytest.raises(ValueError, match="^stepz: unknown"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="^train_data"):
        train(tiny_gpt2(), {"ids": torch.zeros(2, 3)}, config=TrainConfig(steps=1, progress=False))
    with pytest.raises(ValueError, match="^geco"):
        train(tiny_gpt2(), blocks(), config=TrainConfig(steps=1, progress=False), objective=SparsityUnderCE(GECO(tau=1.0)))


def test_gradient_accumulation_matches_one_big_batch():
    data = blocks()
    trained = []
    for accum in (1, 4):
        torch.manual_seed(0)
        config = TrainConfig(steps=3, batch_size=8, grad_accum=accum, progress=False)
        trained.append(train(tiny_gpt2(), data, config=config).model.state_dict())
    for key in trained[0]:
        torch.testing.assert_close(trained[0][key], trained[1][key], atol=1e-5, rtol=1e-4)


def test_auto_grad_accum_halves_the_micro_batch_until_it_fits():
    model = tiny_gpt2()
    forward = model.forward
    seen = []

    def limited(*args, **kwargs):
        rows = kwargs["input_ids"].shape[0]
        seen.append(rows)
        if rows > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(*args, **kwargs)

    model.forward = limited
    config = TrainConfig(steps=2, batch_size=16, grad_accum="auto", progress=False)
    train(model, blocks(), config=config)
    assert seen[:3] == [16, 8, 4]
    assert set(seen[3:]) == {4}  # every step then runs 4 micro-batches of 4


def test_activation_checkpointing_gives_the_same_sparse_training_step():
    trained = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = sparsify(tiny_gpt2())
        config = TrainConfig(steps=2, batch_size=8, lr=1e-2, activation_checkpointing=checkpointing, progress=False)
        train(model, blocks(), config=config, objective=SparsityUnderCE(GECO(tau=10.0, beta_init=1.0, eta=0.0)))
        trained.append(model.state_dict())
    for key in trained[0]:
        torch.testing.assert_close(trained[0][key], trained[1][key], atol=1e-6, rtol=1e-5)


# ---- a run directory knows what it is; finite or nothing; torn and corrupt state (robustness of train()) ----


def _sparse_run(out_dir, steps=4, lr=1e-3, seed=0, tau=4.0, identity=None, fresh=False, on_step=None):
    torch.manual_seed(0)
    model = sparsify(tiny_gpt2())
    config = TrainConfig(steps=steps, batch_size=8, lr=lr, seed=seed, checkpoint_every=2, keep_best=False,
                         progress=False)
    return train(model, blocks(), config=config, objective=SparsityUnderCE(GECO(tau=tau, eta=0.5)),
                 folder=RunFolder(out_dir, identity, fresh), on_step=on_step)


@pytest.mark.parametrize("change, named", [
    (dict(lr=3e-3), "train.lr"), (dict(seed=1), "train.seed"), (dict(steps=3), "train.steps"),
    (dict(tau=2.0), "objective.tau"), (dict(identity={"model": "other"}), "run.model"),
])
def test_a_rerun_with_other_settings_is_refused_naming_the_difference(tmp_path, change, named):
    _sparse_run(tmp_path, identity={"model": "tiny"})
    before = load_file(tmp_path / "checkpoint" / "model.safetensors")
    with pytest.raises(RunMismatch, match=f"^out: .*holds another run \\({named} is"):
        _sparse_run(tmp_path, **{"identity": {"model": "tiny"}, **change})
    after = load_file(tmp_path / "checkpoint" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before), "a refused rerun must not touch the old run"


def test_fresh_discards_the_old_run_and_trains_the_new_settings(tmp_path):
    _sparse_run(tmp_path, lr=1e-3)
    result = _sparse_run(tmp_path, lr=3e-3, fresh=True)
    assert result.resumed_from is None
    assert json.loads((tmp_path / "run.json").read_text())["train"]["lr"] == 3e-3
    assert result.history[0]["lr"] == 3e-3


def test_a_finished_run_asked_for_again_trains_nothing(tmp_path):
    first = _sparse_run(tmp_path)
    again = _sparse_run(tmp_path)
    assert again.resumed_from == 4 and [r["step"] for r in again.history] == [r["step"] for r in first.history]


def test_non_finite_gradients_are_not_applied_nor_checkpointed(tmp_path):
    model = tiny_gpt2()
    calls = {"n": 0}

    def poison(grad):
        calls["n"] += 1
        return grad * float("nan") if calls["n"] >= 3 else grad

    model.transformer.wte.weight.register_hook(poison)
    config = TrainConfig(steps=5, batch_size=4, checkpoint_every=1, progress=False)
    with pytest.raises(TrainingDiverged, match="step 3: gradient norm is nan.*not applied.*Last finite checkpoint"):
        train(model, blocks(), config=config, folder=RunFolder(tmp_path))
    assert all(torch.isfinite(p).all() for p in model.parameters()), "the poisoned step must not be applied"
    assert json.load(open(tmp_path / "checkpoint" / "trainer.json"))["step"] == 2
    weights = load_file(tmp_path / "checkpoint" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    model = tiny_gpt2()
    config = TrainConfig(steps=4, batch_size=4, checkpoint_every=1, progress=False)

    def corrupt(record):
        if record["step"] == 3:
            with torch.no_grad():
                model.lm_head.weight[0, 0] = float("inf")

    with pytest.raises(TrainingDiverged, match="step 3: parameter .* is not finite; not checkpointed"):
        train(model, blocks(), config=config, folder=RunFolder(tmp_path), on_step=corrupt)
    assert json.load(open(tmp_path / "checkpoint" / "trainer.json"))["step"] == 2


def test_checkpoints_by_wall_time_as_well_as_steps(tmp_path):
    config = TrainConfig(steps=6, batch_size=4, checkpoint_every=0, checkpoint_seconds=1e-9, progress=False)

    def stop(record):
        if record["step"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_gpt2(), blocks(), config=config, folder=RunFolder(tmp_path), on_step=stop)
    assert json.load(open(tmp_path / "checkpoint" / "trainer.json"))["step"] == 3


def test_a_torn_last_log_line_is_ignored_with_a_warning(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _sparse_run(tmp_path, steps=6, on_step=lambda r: (_ for _ in ()).throw(KeyboardInterrupt)
                    if r["step"] == 3 else None)
    with open(tmp_path / "log.jsonl", "a") as log:
        log.write('{"step": 3, "ce": 1.2')  # a write cut by a kill
    with pytest.warns(UserWarning, match="torn"):
        result = _sparse_run(tmp_path, steps=6)
    assert result.resumed_from == 2
    assert [json.loads(l)["step"] for l in open(tmp_path / "log.jsonl")] == list(range(1, 7))


@pytest.mark.parametrize("victim", ["trainer.pt", "trainer.json", "model.safetensors"])
def test_a_corrupt_checkpoint_is_named_with_what_to_delete(tmp_path, victim):
    _sparse_run(tmp_path, steps=2)
    (tmp_path / "checkpoint" / victim).write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointUnreadable, match=f"^checkpoint: {tmp_path}/checkpoint cannot be resumed.*delete"):
        _sparse_run(tmp_path, steps=2)


def test_a_second_process_on_the_same_run_directory_is_refused(tmp_path):
    import subprocess
    import sys
    import time

    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; h = open(sys.argv[1], 'a+'); fcntl.flock(h, fcntl.LOCK_EX); "
        "h.write(str(os.getpid())); h.flush(); print('held', flush=True); time.sleep(60)"), str(tmp_path / ".lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.perf_counter()
        with pytest.raises(RunBusy, match=f"^out: another process \\(pid {holder.pid}\\) is training into"):
            _sparse_run(tmp_path)
        assert time.perf_counter() - started < 10
    finally:
        holder.kill()
        holder.wait()
    _sparse_run(tmp_path)  # the lock dies with its process


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real_save = torch.save
    calls = {"n": 0}

    def full_disk(obj, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 9216 vs 9110")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="^checkpoint: could not write .*disk full\\?.*previous checkpoint .* is intact"):
        _sparse_run(tmp_path, steps=4)
    assert json.load(open(tmp_path / "checkpoint" / "trainer.json"))["step"] == 2


def test_a_symbolic_link_planted_at_the_run_lock_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").symlink_to(victim)
    with pytest.raises(ValueError, match="is a symbolic link"):
        _sparse_run(out)
    assert victim.read_text() == "precious"
