"""Circuit discovery on tiny random GPT-2 and Llama models, dense and sparsified.

The patching machinery is checked against independent implementations (plain forward passes, hand-written hooks
that replace one head's query or output), EAP-IG against the completeness identity of integrated gradients, and
EAP / EAP-IG rankings against exact edge patching (thresholds measured, see ``RANK_THRESHOLDS``).
"""

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from spartan_core.circuits import (  # noqa: E402
    ComponentGraph,
    EdgeScores,
    RunState,
    SizeSettings,
    addition_task,
    attribute,
    circuit_size,
    corrupt_outputs,
    evaluate_ablations,
    exact_edge_scores,
    explained_effect,
    induction_task,
    linear_grid,
    log_grid,
    size_ratios,
    size_study,
    spearman,
)
from spartan_core import plots  # noqa: E402
from spartan_core.circuits.size import _Curve, _needed  # noqa: E402
from spartan_core.data.addition import VOCAB_SIZE  # noqa: E402
from spartan_core.mechanism.sparsify import sparsify  # noqa: E402

# Minimum Spearman correlation of signed edge scores with exact patching, for the seed-0 models below on 16
# addition problems. Measured over seeds 0-9 of the four model kinds (initialiser std 0.2, so the models are far
# from linear): EAP 0.42-0.95 (mean 0.55-0.77 per kind), EAP-IG (8 steps) 0.28-0.84 (mean 0.51-0.77), random
# scores -0.23..0.23. At seed 0 the lowest value is 0.50 (EAP-IG, Llama with grouped-query attention), so 0.4
# sits above anything random scores reach and below every value the tested models give.
RANK_THRESHOLDS = {"eap": 0.4, "eap-ig": 0.4}


def gpt2(seed=0, vocab=VOCAB_SIZE):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=2, n_head=4, n_embd=32, vocab_size=vocab, n_positions=32, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, initializer_range=0.2,
    )
    return transformers.GPT2LMHeadModel(config).eval()


def llama(seed=0, vocab=VOCAB_SIZE, kv_heads=2):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=kv_heads, hidden_size=32,
        intermediate_size=64, vocab_size=vocab, max_position_embeddings=32, initializer_range=0.2,
    )
    return transformers.LlamaForCausalLM(config).eval()


MODELS = {
    "gpt2": lambda seed=0: gpt2(seed),
    "gpt2-sparse": lambda seed=0: sparsify(gpt2(seed)),
    "llama": lambda seed=0: llama(seed),
    "llama-sparse": lambda seed=0: sparsify(llama(seed)),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def task():
    return addition_task(16, seed=0)


_EXACT = {}


def graph_and_exact(kind, task):
    """The seed-0 model of ``kind``, its graph and its exact edge scores, computed once per test session."""
    if kind not in _EXACT:
        graph = ComponentGraph(MODELS[kind]())
        _EXACT[kind] = graph, exact_edge_scores(graph, task)
    return _EXACT[kind]


def plain_logits(model, ids, mask=None):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits


def run_logits(graph, task, ablated_all: bool, ablation="resample"):
    corrupt = corrupt_outputs(graph, task, ablation)
    matrix = graph.ablation_matrix(torch.full((graph.n_edges,), ablated_all))[None]
    with torch.no_grad():
        logits, _ = graph.run(task.clean_ids, task.attention_mask, RunState(corrupt=corrupt, ablate=matrix))
    return logits


# ---------------------------------------------------------------- the graph
def test_graph_nodes_and_edges():
    graph = ComponentGraph(gpt2())
    assert graph.upstream[:2] == ["emb", "a0.h0"] and graph.upstream[-1] == "m1"
    assert graph.n_upstream == 1 + 2 * (4 + 1) and graph.n_inputs == 2 * (12 + 1) + 1
    # emb feeds all 27 inputs; a layer-0 head feeds 12 q/k/v of layer 1, m0, m1, logits; m0 feeds 12 + m1 +
    # logits; a layer-1 head feeds m1 and logits; m1 feeds the logits.
    assert graph.n_edges == 27 + 4 * 15 + 14 + 4 * 2 + 1
    edges = set(graph.edges)
    assert ("a0.h1", "a1.h2.q") in edges and ("a0.h1", "m0") in edges and ("m1", "logits") in edges
    assert ("a1.h0", "a1.h2.q") not in edges and ("m0", "a0.h0.k") not in edges and ("a1.h0", "m0") not in edges
    assert graph.edge_mask(["emb->logits"]).sum() == 1
    with pytest.raises(ValueError, match="edges"):
        graph.edge_mask(["m1->a0.h0.q"])


def test_graph_grouped_query_attention_names():
    graph = ComponentGraph(llama(kv_heads=2))
    assert "a0.kv1.k" in graph.inputs and "a0.h3.q" in graph.inputs and "a0.h3.k" not in graph.inputs
    assert graph.n_inputs == 2 * (4 + 2 + 2 + 1) + 1


def test_graph_refuses_unknown_model():
    with pytest.raises(ValueError, match="model"):
        ComponentGraph(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------- interventions: exactness
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_patching_no_edge_is_clean_and_every_edge_is_corrupted(kind, task):
    model = MODELS[kind]()
    graph = ComponentGraph(model)
    clean, corrupted = plain_logits(model, task.clean_ids), plain_logits(model, task.corrupt_ids)
    assert (clean - corrupted).abs().max() > 1e-2  # the two runs differ, so the check below means something
    torch.testing.assert_close(run_logits(graph, task, False), clean, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(run_logits(graph, task, True), corrupted, atol=2e-5, rtol=1e-5)


def test_patching_respects_padding():
    model = gpt2(vocab=20)
    base = induction_task(20, 6, half=4, seed=1)
    pad = torch.zeros(len(base), 3, dtype=torch.long)
    padded = type(base)(
        name="padded", clean_ids=torch.cat([base.clean_ids, pad], 1), corrupt_ids=torch.cat([base.corrupt_ids, pad], 1),
        targets=base.targets, metric_fn=base.metric_fn,
        attention_mask=torch.cat([torch.ones_like(base.clean_ids), pad], 1),
    )
    graph = ComponentGraph(model)
    every = torch.ones(1, graph.n_edges, dtype=torch.bool)
    none = torch.zeros(1, graph.n_edges, dtype=torch.bool)
    values = evaluate_ablations(graph, padded, torch.cat([none, every]))
    expected = [base.metric(plain_logits(model, base.clean_ids)).mean(),
                base.metric(plain_logits(model, base.corrupt_ids)).mean()]
    np.testing.assert_allclose(values.numpy(), torch.stack(expected).numpy(), atol=1e-5)


def _z_hook_run(model, layer_module, ids, head, replacement_z):
    """Independent node patch: replace one head's slice of the output-projection input."""
    head_dim = model.config.hidden_size // model.config.num_attention_heads

    def hook(module, args):
        z = args[0].clone()
        z[..., head * head_dim:(head + 1) * head_dim] = replacement_z[..., head * head_dim:(head + 1) * head_dim]
        return (z,)

    handle = layer_module.register_forward_pre_hook(hook)
    try:
        return plain_logits(model, ids)
    finally:
        handle.remove()


def _capture_input(module, model, ids):
    seen = {}
    handle = module.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0].detach()))
    try:
        plain_logits(model, ids)
    finally:
        handle.remove()
    return seen["x"]


def test_node_patching_matches_replacing_the_head_output(task):
    model = gpt2()
    graph = ComponentGraph(model)
    o_proj = model.transformer.h[0].attn.c_proj
    corrupted_z = _capture_input(o_proj, model, task.corrupt_ids)
    expected = task.metric(_z_hook_run(model, o_proj, task.clean_ids, 2, corrupted_z)).mean()
    got = evaluate_ablations(graph, task, graph.node_edges(["a0.h2"])[None])[0]
    assert abs(float(got) - float(expected)) < 1e-5


def test_ablating_every_edge_into_one_query_matches_a_query_from_the_corrupted_residual(task):
    model = gpt2()
    graph = ComponentGraph(model)
    block = model.transformer.h[1]
    corrupted_residual = _capture_input(block.ln_1, model, task.corrupt_ids)
    width = model.config.n_embd
    head_dim = width // 4

    with torch.no_grad():
        qkv_corrupted = block.attn.c_attn.forward(block.ln_1.forward(corrupted_residual))

    def hook(module, args, output):
        out = output.clone()
        out[..., 3 * head_dim:4 * head_dim] = qkv_corrupted[..., 3 * head_dim:4 * head_dim]
        return out

    handle = block.attn.c_attn.register_forward_hook(hook)
    try:
        expected = task.metric(plain_logits(model, task.clean_ids)).mean()
    finally:
        handle.remove()
    into_query = torch.tensor([d == "a1.h3.q" for _, d in graph.edges])[None]
    got = evaluate_ablations(graph, task, into_query)[0]
    assert width == 32 and abs(float(got) - float(expected)) < 1e-5


def test_mean_ablation_of_every_edge_gives_one_answer_for_all_prompts(task):
    model = llama()
    graph = ComponentGraph(model)
    mean = corrupt_outputs(graph, task, "mean")
    assert mean.shape == (1, task.clean_ids.shape[1], graph.n_upstream, graph.d_model)
    logits = run_logits(graph, task, True, "mean")
    torch.testing.assert_close(logits, logits[:1].expand_as(logits), atol=1e-5, rtol=1e-5)
    # the final residual under full mean ablation is the mean final residual of the reference prompts
    final = _capture_input(model.model.norm, model, task.corrupt_ids).mean(0, keepdim=True)
    with torch.no_grad():
        expected = model.lm_head(model.model.norm(final))
    torch.testing.assert_close(logits[:1], expected, atol=1e-5, rtol=1e-5)


def test_batching_does_not_change_scores(task):
    graph = ComponentGraph(llama())
    a = attribute(graph, task, "eap", batch_size=16).scores
    b = attribute(graph, task, "eap", batch_size=5).scores
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    configs = torch.rand(3, graph.n_edges) < 0.5
    x = evaluate_ablations(graph, task, configs, rows_per_pass=4096)
    y = evaluate_ablations(graph, task, configs, rows_per_pass=12, batch_size=6)
    torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- attribution
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_eap_ig_completeness_over_embedding_edges(kind, task):
    """Integrated gradients along the embedding path add up to m(corrupted) - m(clean) (every input reads the
    embedding, so the embedding's edges together carry its whole attribution). Midpoint-rule error falls as
    1/steps^2 (measured: 0.03 % for GPT-2, 0.2 % for Llama at 32 steps). Dense models only: a sparsified model's
    hard gates have no gradient, so gradient attributions miss gates that switch (measured: 59 % of the effect
    missing on the sparse GPT-2 here, at any number of steps)."""
    model = MODELS[kind]()
    graph = ComponentGraph(model)
    scores = attribute(graph, task, "eap-ig", steps=32)
    from_embedding = scores.scores[[u == "emb" for u, _ in graph.edges]].sum()
    clean = task.metric(plain_logits(model, task.clean_ids)).mean()
    corrupted = task.metric(plain_logits(model, task.corrupt_ids)).mean()
    assert abs(float(from_embedding) - float(corrupted - clean)) < 0.01 * abs(float(corrupted - clean))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_attribution_ranks_edges_like_exact_patching(kind, task):
    graph, exact = graph_and_exact(kind, task)
    for method, threshold in RANK_THRESHOLDS.items():
        approx = attribute(graph, task, method, steps=8)
        assert spearman(approx.scores, exact.scores) > threshold, method


def test_spearman_detects_unrelated_and_reversed_rankings():
    a = torch.arange(50.0)
    assert spearman(a, a**3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert abs(spearman(a, torch.randperm(50).double())) < 0.5


def test_head_scores_are_sums_of_outgoing_edges(task):
    graph = ComponentGraph(gpt2())
    scores = attribute(graph, task, "eap")
    assert isinstance(scores, EdgeScores) and scores.scores.shape == (graph.n_edges,)
    frame = scores.to_frame()
    by_source = frame.groupby("source")["score"].sum()
    np.testing.assert_allclose(scores.head_scores().numpy(), by_source[graph.heads].to_numpy())
    assert set(frame.columns) >= {"edge", "source", "input", "kind", "score", "abs_score", "rank"}
    assert json.loads(json.dumps(scores.to_dict()))["method"] == "eap"
    assert scores.top_edges(5).sum() == 5 and len(scores.top_heads(3)) == 3


def test_attribute_refuses_bad_parameters(task):
    graph = ComponentGraph(gpt2())
    with pytest.raises(ValueError, match="method"):
        attribute(graph, task, "eap-xyz")
    with pytest.raises(ValueError, match="ablation"):
        attribute(graph, task, "eap", ablation="zero")
    with pytest.raises(ValueError, match="steps"):
        attribute(graph, task, "eap-ig", steps=0)


# ---------------------------------------------------------------- circuit size
def test_explained_effect_curves_run_from_empty_to_model(task):
    graph, scores = graph_and_exact("gpt2", task)
    size = circuit_size(graph, task, scores, settings=SizeSettings(thresholds=(0.9,), points=6, batch_size=64))
    for curve, n_max in ((size["edge_curve"], graph.n_edges), (size["head_curve"], len(graph.heads))):
        assert curve["kept"].iloc[0] == 0 and curve["kept"].iloc[-1] == n_max
        assert curve["explained"].iloc[0] == pytest.approx(0.0, abs=1e-5)
        assert curve["explained"].iloc[-1] == pytest.approx(1.0, abs=1e-5)
    assert list(size["head_curve"]["kept"]) == list(range(9))


def test_circuit_size_reports_counts_reached(task):
    graph, scores = graph_and_exact("gpt2", task)
    size = circuit_size(graph, task, scores, ablation="mean",
                        settings=SizeSettings(thresholds=(0.5, 0.9), points=6, batch_size=64))
    curve = size["edge_curve"]
    for threshold, n in size["edges"].items():
        assert n is not None and 0 < n <= graph.n_edges
        keep = scores.top_edges(n)
        value = evaluate_ablations(graph, task, (~keep)[None], ablation="mean")[0]
        explained = explained_effect(float(value), size["m_model"], size["m_empty_edges"])
        assert explained >= threshold - 1e-9
    assert curve["ablation"].eq("mean").all()
    json.dumps({k: v for k, v in size.items() if not k.endswith("curve")})


def test_needed_bisects_between_grid_points():
    class Linear(_Curve):
        def __init__(self):
            self.values = {}

        def at(self, counts):
            return [n / 100 for n in counts]

    assert linear_grid(10, 4) == [0, 3, 7, 10] and linear_grid(3) == [0, 1, 2, 3]
    grid = log_grid(100, 5)
    assert grid[0] == 0 and grid[-1] == 100 and 90 not in grid
    assert _needed(Linear(), grid, 1.0, 0.0, 0.9, refine=True) == 90
    assert _needed(Linear(), grid, 1.0, 0.0, 0.9, refine=False) == 100
    assert _needed(Linear(), grid, 1.0, 0.0, 1.01, refine=True) is None


def test_size_study_covers_every_model_ablation_and_prompt_set(task):
    models = {"dense": gpt2(), "copy": gpt2(), "sparse": sparsify(gpt2())}
    needed, curves = size_study(models, lambda seed: addition_task(6, seed=seed), [0, 1], method="eap",
                                ablations=("resample", "mean"), settings=SizeSettings(thresholds=(0.8, 0.9), points=4))
    assert len(needed) == 3 * 2 * 2 * 2 * 2  # models x ablations x seeds x kinds x thresholds
    assert set(curves["model"]) == set(models) and set(curves["seed"]) == {0, 1}
    assert (needed["m_model"] != needed["m_empty"]).all()
    ratios = size_ratios(needed, "dense", 0.9)
    assert list(ratios.columns) == ["ratio_mean", "ratio_min", "ratio_max", "prompt_sets"]
    assert list(ratios.index.names) == ["ablation", "kind", "model"] and (ratios["prompt_sets"] == 2).all()
    copy = ratios.xs("copy", level="model")
    assert copy["ratio_mean"].tolist() == pytest.approx([1.0] * 4), "an identical model has the same circuit"
    assert (ratios["ratio_min"] <= ratios["ratio_mean"]).all() and (ratios["ratio_mean"] <= ratios["ratio_max"]).all()
    with pytest.raises(ValueError, match="^ablations: "):
        size_study(models, lambda seed: addition_task(6, seed=seed), [0], ablations=("zero",))
    with pytest.raises(ValueError, match="^reference: "):
        size_ratios(needed, "nobody")


def test_draw_circuit_draws_kept_edges(task):
    graph = ComponentGraph(llama())
    scores = attribute(graph, task, "eap")
    fig = plots.draw_circuit(scores, 7, n_layers=2, n_heads=4, n_kv_heads=2)
    assert len(fig.axes[0].patches) == 7
    with pytest.raises(ValueError, match="keep"):
        plots.draw_circuit(scores, torch.ones(3, dtype=torch.bool), n_layers=2, n_heads=4)
    matplotlib.pyplot.close(fig)
