import dataclasses
import math

import pytest
import torch

from conftest import tiny_gpt2
from spartan_core.studies.gated_attention import (SamplingCheck, check_model, mechanism_claim, one_head,
                                                 random_gpt2, sample_masks)


def test_one_head_is_softmax_times_the_threshold_mask_and_rows_are_not_renormalised():
    example = one_head(seq_len=10, head_dim=8, gate_bias=0.0, seed=1)
    checks = example.checks()
    assert checks["mask_is_threshold"] and checks["kept_is_softmax_times_mask"]
    assert checks["regulariser_is_mean_probability"]
    assert {f"example_{name}" for name in checks} <= set(example.metrics())
    rows = example.rows()
    assert rows["possible_keys"].tolist() == list(range(1, 11))
    assert (rows["dense_weight_sum"] - 1).abs().max() < 1e-5
    assert rows["kept_weight_sum"].min() < 1 - 1e-3, "some row keeps less than all of its mass"
    assert example.metrics()["example_row_sum_max"] <= 1 + 1e-6
    assert "not renormalised" in example.sentence and "NOT" not in example.sentence
    assert [title for _, title in example.panels()][-1] == "kept weights (not renormalised)"


def test_open_gates_keep_everything_in_the_example():
    example = one_head(seq_len=6, head_dim=4, gate_bias=math.inf)
    assert example.kept_fraction == 1.0 and torch.allclose(example.kept_weights, example.dense_weights)


def test_sampled_keep_frequency_matches_the_gate_probability():
    check = sample_masks(one_head(seq_len=8, head_dim=8, gate_bias=0.5), n_samples=4000)
    assert len(check.gate_probability) == 8 * 9 // 2
    assert check.max_abs_error < 6 * check.noise_sd_bound
    assert check.metrics()["sampling_draws"] == 4000 and "within binomial noise" in check.sentence
    with pytest.raises(ValueError, match="^n_samples:"):
        sample_masks(one_head(4, 4, 0.0), 0)


def test_model_check_open_gates_reproduce_dense_and_the_model_is_left_dense():
    model = random_gpt2(layers=2, heads=2, head_dim=8, positions=16).eval()
    tokens = torch.randint(0, 256, (2, 16))
    check = check_model(model, tokens, gate_bias=0.0, description="random GPT-2")
    assert check.open_gates_max_abs_logit_diff < 1e-5 and check.open_gates_max_abs_attention_diff < 1e-5
    assert check.gated_max_abs_logit_diff > 0 and all(0 < f < 1 for f in check.gated_kept_fraction_by_layer)
    assert 0 <= check.gated_row_sum_min <= check.gated_row_sum_max <= 1 + 1e-6
    assert check.dense_layer0.shape == check.gated_layer0.shape == (2, 16, 16)
    assert model.config._attn_implementation == "eager", "check_model undoes its sparsify"
    assert list(check.table().columns) == ["b = +inf (all gates open)", "b = 0"]
    assert "computes its dense logits" in check.sentence
    sampling = sample_masks(one_head(4, 4, 0.0), 100)
    assert mechanism_claim(sampling, check).sentence.startswith("open gates (b = +∞) reproduce dense GPT-2 logits")
    assert check.metrics()["open_gates_max_abs_logit_diff"] == check.open_gates_max_abs_logit_diff


def test_the_mechanism_claim_is_reproduced_only_when_open_gates_are_exact_and_sampling_matches():
    model = check_model(random_gpt2(layers=1, heads=2, head_dim=4, positions=8), torch.randint(0, 256, (1, 8)), 0.0)
    probability = sample_masks(one_head(6, 4, 0.0), 10).gate_probability
    sampling = SamplingCheck(draws=10, gate_probability=probability, keep_frequency=probability + 0.005)
    claim = mechanism_claim(sampling, model)
    assert claim.id == "mechanism" and claim.verdict == "reproduced" and "1e-4" in claim.rule
    assert claim.values == {"open_gates_max_abs_logit_diff": model.open_gates_max_abs_logit_diff,
                            "sampling_max_abs_error": sampling.max_abs_error}
    inexact = dataclasses.replace(model, open_gates_max_abs_logit_diff=2e-4)
    assert mechanism_claim(sampling, inexact).verdict == "not reproduced"
    biased = dataclasses.replace(sampling, keep_frequency=sampling.gate_probability + 0.03)
    assert mechanism_claim(biased, model).verdict == "not reproduced"
    near = dataclasses.replace(sampling, keep_frequency=sampling.gate_probability + 0.019)
    assert mechanism_claim(near, dataclasses.replace(model, open_gates_max_abs_logit_diff=1e-4)).verdict == \
        "reproduced", "both tolerances are inclusive"


def test_model_check_works_on_the_shared_tiny_model():
    check = check_model(tiny_gpt2().eval(), torch.randint(0, 50, (1, 12)), gate_bias=1.0)
    assert check.open_gates_max_abs_logit_diff < 1e-5
    assert set(check.metrics()) >= {"open_gates_max_abs_logit_diff", "gated_kept_fraction_by_layer"}
    assert check.dense_layer0.shape == (4, 12, 12)
