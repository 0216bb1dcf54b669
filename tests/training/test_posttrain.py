"""The one recipe: the command line and the Python API, given the same recipe and seed, train the same weights."""

import json

import torch
from safetensors.torch import load_file

from spartan_core import SparseRecipe, post_train, zoo
from spartan_core.cli import main
from spartan_core.data.text import pack_blocks


def test_cli_and_python_api_end_with_bit_identical_weights(local_model, tmp_path, capsys):
    model_dir, text = local_model
    out = tmp_path / "run"
    assert main(["post-train", "--model", str(model_dir), "--data", str(text), "--seq-len", "16", "--out", str(out),
                 "--steps", "6", "--batch-size", "4", "--eval-every", "3", "--tau-reference", "floor",
                 "--floor-steps", "3", "--tau-factor", "1.5", "--eta", "2", "--seed", "3", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())

    loaded = zoo.load(str(model_dir), progress=False)
    blocks = pack_blocks(loaded.tokenizer(text.read_text())["input_ids"], 16)["input_ids"]
    cut = int(blocks.shape[0] * 0.9)
    recipe = SparseRecipe(steps=6, batch_size=4, eval_every=3, tau_reference="floor", floor_steps=3,
                          tau_factor=1.5, eta=2.0, seed=3)
    result = post_train(loaded.model, {"input_ids": blocks[:cut]}, {"input_ids": blocks[cut:]}, recipe,
                        progress=False)

    assert result.tau == summary["tau"] and result.floor_ce == summary["floor_ce"]
    assert result.best_step == summary["best_step"]
    from_cli = load_file(out / "model.safetensors")
    for name, tensor in result.model.state_dict().items():
        if name in from_cli:
            assert torch.equal(tensor, from_cli[name]), name


def test_post_train_reports_metrics_before_and_after_and_the_tau_rule(local_model):
    model_dir, text = local_model
    loaded = zoo.load(str(model_dir), progress=False)
    blocks = pack_blocks(loaded.tokenizer(text.read_text())["input_ids"], 16)["input_ids"]
    data = {"input_ids": blocks}
    result = post_train(loaded.model, data, data, SparseRecipe(steps=2, batch_size=4, eval_every=1, tau_factor=2.0,
                                                               tau_min=50.0), progress=False)
    assert result.tau == 50.0 and result.tau_reference == "dense"  # 2 x the dense CE is under tau_min
    assert set(result.metrics) == {"dense", "gated_before_training", "sparse"}
    assert "kept_fraction" not in result.metrics["dense"] and 0 < result.metrics["sparse"]["kept_fraction"] <= 1
    assert [r["phase"] for r in result.history] == ["geco", "geco"]


def _short_run(local_model, **recipe):
    """Post-train the local model for 1 floor and 2 main steps on 16-token blocks of its text; returns the
    result and the data it trained on."""
    model_dir, text = local_model
    loaded = zoo.load(str(model_dir), progress=False)
    data = {"input_ids": pack_blocks(loaded.tokenizer(text.read_text())["input_ids"], 16)["input_ids"]}
    recipe = SparseRecipe(steps=2, floor_steps=1, batch_size=4, eval_every=1, heldout_max_batches=1,
                          eval_batch_size=4, **recipe)
    return post_train(loaded.model, data, data, recipe, progress=False), data


def test_a_fixed_policy_recipe_fine_tunes_the_same_budget_on_plain_ce(local_model):
    from spartan_core.mechanism.sparsify import sparse_state

    result, _ = _short_run(local_model, policy="topk", keys_per_query=2)
    assert result.tau is None and [r["phase"] for r in result.history] == ["policy"] * 3
    expected = (2 * 16 - 1) / 16  # the first query has only itself to keep
    for kind in ("policy_before_training", "sparse"):
        assert result.metrics[kind]["kept_per_query"] == expected
    assert result.metrics["policy"]["name"] == "topk" and sparse_state(result.model).policy.keys_per_query == 2
    assert "beta" not in result.history[0]


def test_the_dense_control_trains_the_gates_steps_without_a_gate(local_model):
    """Same data, steps (floor and GECO phases together) and seed as the gate, plain CE, never sparsified: the
    weights equal a plain fine-tuning of the dense model for those steps."""
    from spartan_core.mechanism.sparsify import sparse_state
    from spartan_core.objective.base import Objective
    from spartan_core.training import train

    result, data = _short_run(local_model, policy="dense", seed=5)
    assert result.is_control and result.tau is None and sparse_state(result.model) is None
    assert [r["phase"] for r in result.history] == ["control"] * 3 and result.after.edges is None
    assert result.before == result.dense and result.after.ce != result.dense.ce

    plain = zoo.load(str(local_model[0]), progress=False).model
    train(plain, data, config=result.recipe.train_config(3, progress=False), objective=Objective())
    for name, tensor in plain.state_dict().items():
        assert torch.equal(tensor, result.model.state_dict()[name]), name


def test_recipes_refuse_bad_controllers_and_policies_by_name():
    import pytest

    for bad, name in [(dict(controller="lagrange"), "controller"), (dict(kp=1.0), "kp"),
                      (dict(policy="best"), "policy"), (dict(policy="window"), "keys_per_query"),
                      (dict(keys_per_query=2), "keys_per_query"), (dict(heldout_max_batches=0), "heldout_max_batches"),
                      (dict(controller="pi", alpha=1.0), "alpha"), (dict(alpha=-0.1), "alpha"),
                      (dict(policy="topk", keys_per_query=2, controller="pi"), "controller"),
                      (dict(policy="topk", keys_per_query=2, controller="fixed"), "controller"),
                      (dict(policy="dense", keys_per_query=2), "keys_per_query"),
                      (dict(policy="dense", controller="pi"), "controller"), (dict(policy="dense", lora_rank=2), "lora_rank")]:
        with pytest.raises(ValueError, match=f"^{name}"):
            SparseRecipe(**bad)
    assert SparseRecipe(controller="pi", eta=0.5, alpha=0.9).multiplier(1.0).kp == pytest.approx(5.0)
    assert SparseRecipe(controller="fixed", eta=3.0, beta_init=0.2).multiplier(1.0).update(9.0) == pytest.approx(0.2)


def test_count_edges_reads_a_policy_run_with_its_mask(local_model, tmp_path, capsys):
    model_dir, text = local_model
    out = tmp_path / "run"
    common = ["--model", str(model_dir), "--data", str(text), "--seq-len", "16"]
    assert main(["post-train", *common, "--out", str(out), "--steps", "2", "--batch-size", "4", "--policy", "window",
                 "--keys-per-query", "3", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy"]["name"] == "window" and summary["weights_are"].startswith("the last step")
    capsys.readouterr()
    assert main(["count-edges", *common, "--checkpoint", str(out), "--json", str(tmp_path / "e.json")]) == 0
    counts = json.loads((tmp_path / "e.json").read_text())
    assert counts["kept_per_query"] == (3 * 16 - 3) / 16  # queries 0 and 1 see fewer than 3 keys
