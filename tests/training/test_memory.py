"""The memory estimate said before post-training starts: each setting moves the part it should, the 7B entry's
LoRA recipe fits one 80 GiB GPU while training every weight does not, and the command line says so offline."""

import json

import pytest
import torch
import transformers

from conftest import tiny_gpt2
from spartan_core.cli import main
from spartan_core.training.lora import with_lora
from spartan_core.training.memory import estimate_memory, model_from_config
from spartan_core.training.posttrain import SparseRecipe, post_train


def meta_gpt2(layers=12):
    return model_from_config(transformers.GPT2Config(n_layer=layers))


def test_sharding_divides_the_weights_gradients_and_optimiser_but_not_the_activations():
    model = meta_gpt2()
    whole = estimate_memory(model, seq_len=1024, processes=4)
    sharded = estimate_memory(model, seq_len=1024, processes=4, sharded=True)
    for part in ("weights", "gradients", "optimiser"):
        assert sharded.parts[part] == whole.parts[part] // 4
    assert sharded.parts["activations"] == whole.parts["activations"]
    assert whole.parts["weights"] == 4 * sum(p.numel() for p in model.parameters())


def test_lora_leaves_the_weights_and_shrinks_gradients_and_optimiser_to_the_adapters():
    full = estimate_memory(meta_gpt2(), seq_len=256)
    lora = estimate_memory(with_lora(meta_gpt2(), 8), seq_len=256)
    assert lora.trainable < full.parameters / 100
    assert lora.parts["optimiser"] == 8 * lora.trainable and lora.parts["weights"] > full.parts["weights"]
    assert "trainable" in lora.sentence and "every weight trains" in full.sentence


def test_checkpointing_and_query_chunks_bound_the_activations():
    model = meta_gpt2()
    plain = estimate_memory(model, seq_len=1024, micro_batch=4)
    checkpointed = estimate_memory(model, seq_len=1024, micro_batch=4, activation_checkpointing=True)
    assert checkpointed.parts["activations"] < plain.parts["activations"] / 5
    # beyond the chunk threshold the saved scores grow like T x chunk, so doubling T about doubles activations
    long = estimate_memory(model, seq_len=2048, micro_batch=4)
    assert long.parts["activations"] / plain.parts["activations"] == pytest.approx(2, rel=0.01)
    short = estimate_memory(model, seq_len=256, micro_batch=4)
    assert estimate_memory(model, seq_len=512, micro_batch=4).parts["activations"] > 2.2 * short.parts["activations"]


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match=r"^micro_batch: must be an integer >= 1, got 0$"):
        estimate_memory(meta_gpt2(1), seq_len=8, micro_batch=0)


def test_post_train_says_its_estimate_before_it_starts(capsys):
    model = tiny_gpt2()
    ids = torch.randint(1, 50, (16, 16), generator=torch.Generator().manual_seed(0))
    post_train(model, {"input_ids": ids}, {"input_ids": ids[:4]}, SparseRecipe(steps=1, batch_size=8, eval_every=0),
               progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("memory estimate:")]
    assert len(lines) == 1 and "micro-batch 8 x 16 tokens, on one device" in lines[0]


def run_estimate(argv, capsys):
    status = main(["estimate-memory", *argv])
    captured = capsys.readouterr()
    return status, captured


def test_the_7b_entry_fits_one_80_gib_gpu_with_its_lora_recipe_and_needs_sharding_without(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    status, captured = run_estimate(["--model", "allenai/OLMo-2-1124-7B"], capsys)
    lora = json.loads(captured.out)
    assert status == 0 and lora["lora_rank"] == 16 and lora["fits"] and 7.2e9 < lora["parameters"] < 7.4e9
    assert captured.err.startswith("memory estimate: 7.32 B parameters (16.78 M trainable)")
    _, captured = run_estimate(["--model", "allenai/OLMo-2-1124-7B", "--full-weights"], capsys)
    assert not json.loads(captured.out)["fits"]
    _, captured = run_estimate(["--model", "allenai/OLMo-2-1124-7B", "--full-weights", "--processes", "8", "--fsdp"],
                               capsys)
    sharded = json.loads(captured.out)
    assert sharded["fits"] and sharded["gib_per_process"]["weights"] < 4


@pytest.mark.parametrize("argv, message", [
    (["--model", "addition-4l", "--fsdp"], "fsdp: shards over several processes; pass --processes N (N >= 2)"),
    (["--model", "addition-4l", "--full-weights", "--lora-rank", "4"], "full-weights: every weight trains"),
    (["--model", "addition-4l", "--micro-batch", "0"], "micro-batch: must be >= 1, got 0"),
])
def test_bad_estimate_settings_are_refused_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(["estimate-memory", *argv]))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err
