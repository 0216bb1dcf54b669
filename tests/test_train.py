import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_gpt2
from spartan_core import GECO, TrainConfig, TrainingDiverged, evaluate, sparsify, train


def blocks(n=64, t=12, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, t), generator=g)
    ids[:, t // 2:] = ids[:, : t - t // 2]  # a repeat makes the data learnable
    return {"input_ids": ids}


def test_dense_training_reduces_loss_and_logs():
    data = blocks()
    model = tiny_gpt2()
    before = evaluate(model, data)["ce"]
    result = train(model, data, config=TrainConfig(steps=40, batch_size=16, lr=3e-3, progress=False), eval_data=data)
    assert result.evals[-1]["eval_ce"] < before - 0.3
    assert len(result.history) == 40 and {"step", "ce", "lr", "tokens_per_s"} <= set(result.history[0])


def test_geco_post_training_logs_every_field_and_counts_edges(tmp_path):
    data = blocks()
    model = sparsify(tiny_gpt2())
    geco = GECO(tau=10.0, eta=1.0)
    config = TrainConfig(steps=6, batch_size=8, eval_every=3, progress=False)
    result = train(model, data, config=config, eval_data=data, geco=geco, out_dir=tmp_path)
    lines = [json.loads(l) for l in open(tmp_path / "log.jsonl")]
    assert [l["step"] for l in lines] == list(range(1, 7))
    for key in ("ce", "ce_ema", "tau", "beta", "log_beta", "expected_fraction", "tokens_per_s"):
        assert key in lines[-1]
    assert "eval_kept_fraction" in lines[2] and "eval_kept_per_query" in lines[5]
    assert result.history[-1]["beta"] > result.history[0]["beta"]  # constraint slack: beta climbs
    assert result.best_step in (3, 6)


def _run(out_dir, steps, interrupt_at=None):
    torch.manual_seed(0)
    model = sparsify(tiny_gpt2())
    geco = GECO(tau=4.0, eta=0.5)
    config = TrainConfig(steps=steps, batch_size=8, lr=1e-3, checkpoint_every=3, keep_best=False, progress=False)

    def stop(record):
        if record["step"] == interrupt_at:
            raise KeyboardInterrupt

    return train(model, blocks(), config=config, geco=geco, out_dir=out_dir, on_step=stop), geco


def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path):
    full, full_geco = _run(tmp_path / "full", 8)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", 8, interrupt_at=5)
    assert json.load(open(tmp_path / "killed" / "checkpoint" / "trainer.json"))["step"] == 3
    torch.manual_seed(123)  # a fresh process would not share the RNG state: the checkpoint must restore it
    resumed, resumed_geco = _run(tmp_path / "killed", 8)
    assert resumed.resumed_from == 3
    a = load_file(tmp_path / "full" / "checkpoint" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed_geco.state_dict() == full_geco.state_dict()
    steps = [json.loads(l)["step"] for l in open(tmp_path / "killed" / "log.jsonl")]
    assert steps == list(range(1, 9))


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
    with pytest.raises(TrainingDiverged, match="step 3: loss is nan.*Last good checkpoint"):
        train(model, blocks(), config=config, out_dir=tmp_path)
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
        train(tiny_gpt2(), blocks(), config=TrainConfig(steps=1, progress=False), geco=GECO(tau=1.0))


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
        train(model, blocks(), config=config, geco=GECO(tau=10.0, beta_init=1.0, eta=0.0))
        trained.append(model.state_dict())
    for key in trained[0]:
        torch.testing.assert_close(trained[0][key], trained[1][key], atol=1e-6, rtol=1e-5)
