import pytest
import torch

from spartan_core import count_edges, sparsify
from spartan_core.mechanism.gate import AttentionLayer, causal_allowed, gated_attention
from spartan_core.mechanism.policies import POLICIES, MaskPolicy, calibrate_threshold
from conftest import tiny_gpt2


def _scores(batch=2, heads=3, time=10):
    return torch.randn(batch, heads, time, time)


def _kept_per_row(policy, allowed, layer=0):
    scores = _scores(allowed.shape[0], 3, allowed.shape[-1])
    keep = policy.keep(scores, allowed, layer)
    assert not (keep & ~allowed.expand_as(keep)).any(), "a policy keeps only allowed edges"
    return keep.sum(-1), allowed.expand_as(keep).sum(-1)


@pytest.mark.parametrize("name", ["topk", "window", "sink"])
@pytest.mark.parametrize("k", [1, 3])
def test_integer_policies_keep_exactly_k_keys_per_query(name, k):
    padding = torch.ones(2, 10, dtype=torch.bool)
    padding[1, :4] = False  # left padding: the second row's queries see fewer keys
    allowed = causal_allowed(2, 10, 10, padding, torch.device("cpu"))
    kept, possible = _kept_per_row(MaskPolicy(name, k), allowed)
    assert torch.equal(kept, possible.clamp_max(k))


def test_window_keeps_the_most_recent_keys_and_sink_adds_the_first():
    allowed = causal_allowed(1, 8, 8, None, torch.device("cpu"))
    scores = _scores(1, 1, 8)
    window = MaskPolicy("window", 2).keep(scores, allowed, 0)[0, 0]
    sink = MaskPolicy("sink", 3).keep(scores, allowed, 0)[0, 0]
    assert window[7].nonzero().flatten().tolist() == [6, 7]
    assert sink[7].nonzero().flatten().tolist() == [0, 6, 7]
    assert sink[1].nonzero().flatten().tolist() == [0, 1]


def test_topk_keeps_the_largest_attention_weights():
    allowed = causal_allowed(1, 6, 6, None, torch.device("cpu"))
    scores = _scores(1, 1, 6)
    keep = MaskPolicy("topk", 2).keep(scores, allowed, 0)[0, 0, 5]
    assert set(keep.nonzero().flatten().tolist()) == set(scores[0, 0, 5].topk(2).indices.tolist())


def test_random_keeps_k_in_expectation_with_a_pattern_fixed_per_layer():
    allowed = causal_allowed(1, 64, 64, None, torch.device("cpu"))
    policy = MaskPolicy("random", 4, seed=1)
    kept, possible = _kept_per_row(policy, allowed)
    late = possible >= 16
    assert abs(kept[late].float().mean().item() - 4) < 0.4
    scores = _scores(1, 3, 64)
    assert torch.equal(policy.keep(scores, allowed, 0), policy.keep(scores * 5, allowed, 0))
    assert not torch.equal(policy.keep(scores, allowed, 0), policy.keep(scores, allowed, 1))
    assert not torch.equal(policy.keep(scores, allowed, 0), MaskPolicy("random", 4, seed=2).keep(scores, allowed, 0))


@pytest.mark.parametrize("name", POLICIES)
def test_a_policy_keeping_every_key_is_dense_attention(name):
    q, k, v = (torch.randn(2, 3, 9, 8) for _ in range(3))
    allowed = causal_allowed(2, 9, 9, None, torch.device("cpu"))
    policy = MaskPolicy(name, 9, threshold=0.0 if name == "threshold" else None)
    out, _, stats = gated_attention(q, k, v, allowed, layer=AttentionLayer(policy=policy))
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-6)
    assert stats.kept_fraction == 1.0


def test_the_gradient_flows_through_the_kept_softmax_only():
    q, k, v = (torch.randn(1, 2, 6, 4, requires_grad=True) for _ in range(3))
    allowed = causal_allowed(1, 6, 6, None, torch.device("cpu"))
    out, weights, _ = gated_attention(q, k, v, allowed, layer=AttentionLayer(policy=MaskPolicy("window", 2)),
                                      sample=True)
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    expected_weights = torch.softmax(
        (q @ k.transpose(-1, -2) / 2).masked_fill(~allowed, float("-inf")), -1) * MaskPolicy("window", 2).keep(
        q @ k.transpose(-1, -2), allowed, 0)
    torch.testing.assert_close(weights, expected_weights.detach())


def test_the_threshold_calibrates_to_the_budget_and_the_edge_counter_sees_the_policy(one_torch_thread):
    model = tiny_gpt2().eval()
    batches = [{"input_ids": torch.randint(1, 50, (4, 32))} for _ in range(2)]
    policy = MaskPolicy("threshold", 3.0)
    sparsify(model, policy=policy)
    policy.threshold = calibrate_threshold(model, batches, 3.0)
    edges = count_edges(model, batches)
    assert abs(edges.kept_per_query - 3.0) < 0.05
    sparsify(model, policy=MaskPolicy("topk", 2))
    assert count_edges(model, batches).kept_per_query == pytest.approx((2 * 32 - 1) / 32)


@pytest.mark.parametrize("bad, message", [
    (dict(name="best", keys_per_query=2), "policy: must be one of"),
    (dict(name="topk", keys_per_query=1.5), "keys_per_query: the topk policy keeps a whole number"),
    (dict(name="random", keys_per_query=0), "keys_per_query: must be a positive"),
    (dict(name="sink", keys_per_query=0.5), "keys_per_query: the sink policy"),
    (dict(name="threshold", keys_per_query=2, threshold=2.0), "threshold: an attention weight"),
])
def test_bad_policies_are_refused_by_name(bad, message):
    with pytest.raises(ValueError, match=message):
        MaskPolicy(**bad)


def test_an_uncalibrated_threshold_is_refused():
    allowed = causal_allowed(1, 4, 4, None, torch.device("cpu"))
    with pytest.raises(ValueError, match="threshold: the threshold policy is not calibrated"):
        MaskPolicy("threshold", 2).keep(_scores(1, 1, 4), allowed, 0)
